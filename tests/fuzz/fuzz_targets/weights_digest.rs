//! `WeightsDigest` parsing: never a panic, and what parses prints back to an equal digest.
#![no_main]

use dp_digest::WeightsDigest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(digest) = text.parse::<WeightsDigest>() {
        let printed = digest.to_string();
        let again: WeightsDigest = printed.parse().expect("printed digest does not parse");
        assert_eq!(again, digest);
        let via_json: WeightsDigest =
            serde_json::from_value(serde_json::to_value(&digest).expect("serializes"))
                .expect("round trips through JSON");
        assert_eq!(via_json, digest);
    }
});

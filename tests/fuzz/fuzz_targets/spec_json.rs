//! The JSON spec reader and validator on arbitrary text: never a panic, and it agrees with
//! serde_json on which documents are well-formed and what they hold.
#![no_main]

use dp_spec::{SourceDocument, SourceFormat, validate_document};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let ours = SourceDocument::parse_str("fuzz.json", text, SourceFormat::Json);
    if let Ok(doc) = &ours {
        let _ = validate_document(doc);
        // Whatever we accept, serde_json reads as the same value.
        let reference: serde_json::Value =
            serde_json::from_str(text).expect("accepted JSON that serde_json rejects");
        assert_eq!(reference, doc.value);
    }
});

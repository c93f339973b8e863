//! Triton's inference-response decoder: garbage JSON, lying `Inference-Header-Content-Length`
//! values, binary sections shorter or longer than the shapes say, unknown datatypes. Decoding
//! never panics and never allocates more than the body justifies (run with
//! `-malloc_limit_mb`); what decodes has element counts that match its shapes.
//!
//! Input layout: the bytes before the first `\n` are the header's value (none when empty),
//! the rest is the body. Seeds in `seeds/triton_response/`.
#![no_main]

use dp_provider_triton::{INFERENCE_HEADER, decode_infer_response};
use libfuzzer_sys::fuzz_target;
use ureq::http::{HeaderMap, HeaderName, HeaderValue};

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let mut headers = HeaderMap::new();
    if !header.is_empty()
        && let Ok(value) = HeaderValue::from_bytes(header)
    {
        headers.insert(HeaderName::try_from(INFERENCE_HEADER).expect("valid name"), value);
    }
    if let Ok(outputs) = decode_infer_response(&headers, body) {
        for (name, tensor) in &outputs {
            let count = tensor.shape().iter().try_fold(1_usize, |a, &d| a.checked_mul(d));
            assert_eq!(count, Some(tensor.data().len()), "tensor {name}");
        }
    }
});

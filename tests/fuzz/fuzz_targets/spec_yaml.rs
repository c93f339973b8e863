//! The YAML spec reader and validator on arbitrary text: never a panic, and every document
//! it accepts survives a round trip through the YAML writer unchanged.
#![no_main]

use dp_spec::{SourceDocument, SourceFormat, validate_document, yaml_writer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(doc) = SourceDocument::parse_str("fuzz.yaml", text, SourceFormat::Yaml) else {
        return;
    };
    let _ = validate_document(&doc);
    let written = yaml_writer::to_yaml(&doc.value);
    let back = SourceDocument::parse_str("again.yaml", &written, SourceFormat::Yaml)
        .unwrap_or_else(|e| panic!("writer output does not parse: {e}\n{written}"));
    assert_eq!(back.value, doc.value, "round trip changed the value:\n{written}");
});

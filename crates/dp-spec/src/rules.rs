//! Semantic rules: what a spec must satisfy beyond its JSON Schema, each with the precise
//! error code a caller can act on.

use std::collections::HashSet;

use crate::error::ErrorCode;
use crate::model_spec::{Engine, ModelSpec, Precision, Runtime, TensorSpec};

/// One broken rule, located by a JSON pointer into the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleViolation {
    /// Where in the spec (`""` for the whole spec, e.g. a missing field).
    pub pointer: String,
    /// The stable code.
    pub error_code: ErrorCode,
    /// What is wrong and what to do.
    pub message: String,
}

impl RuleViolation {
    fn new(pointer: impl Into<String>, error_code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            error_code,
            message: message.into(),
        }
    }
}

/// Why an artifact path is refused, if it is.
///
/// Paths are checked lexically here; whether a path that passes escapes the models root
/// through a symbolic link is checked where the file system is read.
///
/// ```
/// use dp_spec::{ErrorCode, check_artifact_path};
///
/// assert!(check_artifact_path("minilm/model.safetensors").is_none());
/// assert_eq!(check_artifact_path("s3://bucket/w").map(|(c, _)| c), Some(ErrorCode::NetworkForbidden));
/// assert_eq!(check_artifact_path("../etc/passwd").map(|(c, _)| c), Some(ErrorCode::InvalidSpec));
/// ```
#[must_use]
pub fn check_artifact_path(path: &str) -> Option<(ErrorCode, String)> {
    if let Some(scheme) = url_scheme(path) {
        return Some((
            ErrorCode::NetworkForbidden,
            format!(
                "artifact {path:?} is a {scheme}: URL; dp-models never downloads: copy the files under \
                 DP_MODELS_ROOT and list their relative path"
            ),
        ));
    }
    let invalid = |why: &str| {
        Some((
            ErrorCode::InvalidSpec,
            format!("artifact {path:?} {why}; list a path relative to DP_MODELS_ROOT"),
        ))
    };
    if path.is_empty() {
        return invalid("is empty");
    }
    if path.chars().any(char::is_control) {
        return invalid("contains a control character");
    }
    if path.contains('\\') {
        return invalid("contains a backslash (use `/` separators)");
    }
    if path.starts_with('/') {
        return invalid("is absolute");
    }
    if path.split('/').any(|segment| segment == "..") {
        return invalid("climbs out with `..`");
    }
    // `.`, `./`, `.//.`: no segment names anything, so the path is the models root, and
    // pinning (and loading from) it would take every other model's files along.
    if path
        .split('/')
        .all(|segment| segment.is_empty() || segment == ".")
    {
        return Some((
            ErrorCode::InvalidSpec,
            format!(
                "artifact {path:?} designates the models root itself, which holds every \
                 model; list the model's own folder or files instead (e.g. my-model/ or \
                 my-model/model.safetensors)"
            ),
        ));
    }
    None
}

/// Why a Triton endpoint is refused, if it is: what the Triton client can use is
/// `http://HOST[:PORT][/]`, HOST a name, an IPv4 address or a bracketed IPv6 address and
/// PORT from 1 to 65535. Checked here, at validation, so that a spec the client would
/// refuse (or, with user info, one that carries a secret) never passes `dp validate`.
/// Matches the `endpoint` pattern of the generated schema.
///
/// ```
/// use dp_spec::check_triton_endpoint;
///
/// assert!(check_triton_endpoint("http://127.0.0.1:8000").is_none());
/// assert!(check_triton_endpoint("http://[::1]:8000/").is_none());
/// assert!(check_triton_endpoint("https://127.0.0.1:8000").is_some_and(|m| m.contains("no TLS")));
/// assert!(check_triton_endpoint("http://u:pw@127.0.0.1:1").is_some_and(|m| m.contains("user info")));
/// ```
#[must_use]
pub fn check_triton_endpoint(endpoint: &str) -> Option<String> {
    let refuse = |why: &str| {
        Some(format!(
            "triton endpoint {endpoint:?} {why}; write http://HOST[:PORT], e.g. \
             http://127.0.0.1:8000"
        ))
    };
    if endpoint.starts_with("https://") {
        return refuse(
            "uses https, which the Triton client cannot speak (it is built with no TLS \
             stack); reach Triton over http:// on loopback, or through a local \
             TLS-terminating proxy",
        );
    }
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return refuse("is not an http:// base URL");
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('@') {
        return refuse(
            "holds user info (user@ or user:password@), which the client never sends and a \
             spec file must not hold; remove it",
        );
    }
    if authority.contains(['/', '?', '#']) {
        return refuse("has a path, query or fragment; give only the server's base URL");
    }
    let (host, port, host_ok): (&str, Option<&str>, fn(char) -> bool) =
        if let Some(v6) = authority.strip_prefix('[') {
            let Some((host, after)) = v6.split_once(']') else {
                return refuse("has an IPv6 address with no closing ']'");
            };
            let port = match after.strip_prefix(':') {
                Some(port) => Some(port),
                None if after.is_empty() => None,
                None => return refuse("has text after the IPv6 address"),
            };
            (host, port, |c| {
                c.is_ascii_hexdigit() || matches!(c, ':' | '.')
            })
        } else {
            let (host, port) = match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            (host, port, |c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
            })
        };
    if host.is_empty() {
        return refuse("names no host");
    }
    if !host.chars().all(host_ok) {
        return refuse(&format!(
            "has host {host:?}, which is not a host name or IP address"
        ));
    }
    match port {
        Some("0") => {
            refuse("has port 0, which no server listens on; a port is a number from 1 to 65535")
        }
        Some(port) if !valid_port(port) => refuse(&format!(
            "has port {port:?}; a port is a number from 1 to 65535, without leading zeros"
        )),
        _ => None,
    }
}

/// `1`–`65535`, digits only, no leading zero (as the schema's pattern has it).
fn valid_port(port: &str) -> bool {
    !port.starts_with('0')
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p > 0)
}

/// The URL scheme a path starts with (`http`, `s3`, `file`, `hf`…), if any. Matches
/// `schema::URL_SCHEME_PATTERN`.
fn url_scheme(path: &str) -> Option<&str> {
    let (scheme, _) = path.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-')))
    .then_some(scheme)
}

/// Checks every semantic rule of one spec.
#[must_use]
pub fn check_spec(spec: &ModelSpec) -> Vec<RuleViolation> {
    let mut out = Vec::new();
    if spec.all_roles().next().is_none() {
        out.push(RuleViolation::new(
            "",
            ErrorCode::InvalidSpec,
            "the spec declares no role; add `role: <role>` (or a non-empty `roles` list)",
        ));
    }
    let engines = spec.runtime.supported_engines();
    if !engines.contains(&spec.engine) {
        let names: Vec<&str> = engines.iter().map(|e| e.as_str()).collect();
        out.push(RuleViolation::new(
            "/engine",
            ErrorCode::UnsupportedEngine,
            format!(
                "engine {} cannot run on runtime {}; that runtime supports {}",
                spec.engine.as_str(),
                spec.runtime.as_str(),
                names.join(", ")
            ),
        ));
    }
    // int8 is a property of a quantized graph, which candle does not run.
    if spec.precision == Precision::Int8 && spec.engine == Engine::Candle {
        out.push(RuleViolation::new(
            "/precision",
            ErrorCode::UnsupportedEngine,
            "precision int8 is a quantized graph's, which engine candle does not run; use \
             engine onnx with an int8 model.onnx (or a Triton deployment), or precision fp32, \
             fp16 or bf16 on candle",
        ));
    }
    match spec.runtime {
        Runtime::Inprocess => {
            if spec.weights_digest.is_none() {
                out.push(RuleViolation::new(
                    "",
                    ErrorCode::InvalidSpec,
                    "runtime inprocess requires weights_digest (sha256:<hex> or blake3:<hex>); \
                     compute it with `sha256sum` on the weights file",
                ));
            }
            if spec.local_artifacts.is_empty() {
                out.push(RuleViolation::new(
                    "",
                    ErrorCode::InvalidSpec,
                    "runtime inprocess requires at least one entry in local_artifacts",
                ));
            }
            if spec.triton.is_some() {
                out.push(RuleViolation::new(
                    "/triton",
                    ErrorCode::InvalidSpec,
                    "a triton section only applies to runtime triton; remove it or set runtime: triton",
                ));
            }
        }
        Runtime::Triton => match &spec.triton {
            None => out.push(RuleViolation::new(
                "",
                ErrorCode::InvalidSpec,
                "runtime triton requires a triton section with endpoint and model_name",
            )),
            Some(triton) => {
                if let Some(message) = check_triton_endpoint(&triton.endpoint) {
                    out.push(RuleViolation::new(
                        "/triton/endpoint",
                        ErrorCode::InvalidSpec,
                        message,
                    ));
                }
            }
        },
    }
    for (i, path) in spec.local_artifacts.iter().enumerate() {
        if let Some((code, message)) = check_artifact_path(path) {
            out.push(RuleViolation::new(
                format!("/local_artifacts/{i}"),
                code,
                message,
            ));
        }
    }
    check_tensor_names(&spec.input_schema, "/input_schema", &mut out);
    check_tensor_names(&spec.output_schema, "/output_schema", &mut out);
    let mut seen_aliases = HashSet::new();
    for (i, alias) in spec.aliases.iter().enumerate() {
        if alias == &spec.model_name || !seen_aliases.insert(alias.as_str()) {
            out.push(RuleViolation::new(
                format!("/aliases/{i}"),
                ErrorCode::InvalidSpec,
                format!("alias {alias:?} repeats the model's name or another alias; remove it"),
            ));
        }
    }
    if let Some(preset) = spec.preprocess_preset.as_deref()
        && !PRESET_NAMES.contains(&preset)
    {
        out.push(RuleViolation::new(
            "/preprocess_preset",
            ErrorCode::InvalidSpec,
            format!(
                "unknown preprocess_preset {preset:?}; known presets: {}",
                PRESET_NAMES.join(", ")
            ),
        ));
    }
    if !spec.preprocess_params.is_empty() && spec.preprocess_preset.is_none() {
        out.push(RuleViolation::new(
            "/preprocess_params",
            ErrorCode::InvalidSpec,
            "preprocess_params are given without a preprocess_preset to apply them to",
        ));
    }
    out
}

/// Every preprocessing preset a spec may name: the vocabulary of `preprocess_preset`.
/// `dp-preset`'s registry has one entry per name (a test checks it); a name this build
/// cannot run yet is still valid in a spec (such a model serves `infer` tasks, and
/// `dp health` says the preset is not available).
pub const PRESET_NAMES: &[&str] = &[
    "sentence_embedding",
    "image_clip",
    "image_resize_normalize",
    "image_letterbox",
    "cross_encoder",
    "text_generation",
    "audio_log_mel",
    "audio_waveform",
    "speech_recognition",
    "optical_flow_pair",
];

fn check_tensor_names(tensors: &[TensorSpec], base: &str, out: &mut Vec<RuleViolation>) {
    let mut seen = HashSet::new();
    for (i, tensor) in tensors.iter().enumerate() {
        if !seen.insert(tensor.name.as_str()) {
            out.push(RuleViolation::new(
                format!("{base}/{i}/name"),
                ErrorCode::InvalidSpec,
                format!("tensor {:?} is declared twice", tensor.name),
            ));
        }
    }
}

/// The first of `addresses` that the network rule refuses: neither loopback nor one of
/// `allowed_hosts` written as an IP address (IPv4-mapped IPv6 addresses compared as the IPv4
/// address they carry). A name is proof of nothing (`/etc/hosts` or DNS can map `localhost`
/// anywhere), so a connection is judged by the addresses it would reach. The one statement
/// of this rule: the manager applies it when it is built, the Triton provider on every
/// lookup before a socket opens.
///
/// ```
/// use std::net::IpAddr;
/// use dp_spec::off_limits_address;
///
/// let allowed = ["localhost".to_owned(), "10.0.0.5".to_owned()];
/// let ip = |a: &str| a.parse::<IpAddr>().unwrap();
/// assert_eq!(off_limits_address([ip("127.0.0.1"), ip("10.0.0.5")], &allowed), None);
/// assert_eq!(off_limits_address([ip("10.0.0.9")], &allowed), Some(ip("10.0.0.9")));
/// assert_eq!(off_limits_address([ip("::ffff:127.0.0.1")], &[]), None);
/// ```
#[must_use]
pub fn off_limits_address(
    addresses: impl IntoIterator<Item = std::net::IpAddr>,
    allowed_hosts: &[String],
) -> Option<std::net::IpAddr> {
    let allowed: Vec<std::net::IpAddr> = allowed_hosts
        .iter()
        .filter_map(|a| {
            a.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .ok()
        })
        .map(|ip| ip.to_canonical())
        .collect();
    addresses
        .into_iter()
        .map(|ip| ip.to_canonical())
        .find(|ip| !ip.is_loopback() && !allowed.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_paths() {
        let code = |p: &str| check_artifact_path(p).map(|(c, _)| c);
        assert_eq!(code("a/b.safetensors"), None);
        assert_eq!(code("a/..b/c"), None);
        assert_eq!(code("./a"), None);
        for url in [
            "http://x/y",
            "https://x",
            "file:///etc",
            "s3://b/k",
            "hf:org/model",
            "gs://b",
        ] {
            assert_eq!(code(url), Some(ErrorCode::NetworkForbidden), "{url}");
        }
        for bad in ["", "/abs", "..", "a/../b", "a/..", "a\\b", "a\u{0}b"] {
            assert_eq!(code(bad), Some(ErrorCode::InvalidSpec), "{bad:?}");
        }
        for root in [".", "./", ".//", "./.", ".//./", "././."] {
            let (code, message) = check_artifact_path(root).expect(root);
            assert_eq!(code, ErrorCode::InvalidSpec, "{root:?}");
            assert!(
                message.contains("models root itself"),
                "{root:?}: {message}"
            );
        }
        // Names starting with dots are names.
        for ok in ["...", ".hidden", "./a/", "a/./b", ".a/."] {
            assert_eq!(code(ok), None, "{ok:?}");
        }
    }

    /// The schema's `local_artifacts` items refuse what the semantic check refuses.
    #[test]
    fn artifact_paths_agree_with_the_schema() {
        let items = crate::schema::model_spec_schema()
            .pointer("/properties/local_artifacts/items")
            .cloned()
            .expect("items schema");
        for path in [
            "a/b", "./a", "...", ".a/.", "a/..b", ".", "./", ".//./", "a/..", "..", "/a", "a\\b",
            "s3://b/k",
        ] {
            assert_eq!(
                jsonschema::is_valid(&items, &path.into()),
                check_artifact_path(path).is_none(),
                "{path:?}"
            );
        }
    }

    /// The semantic check and the schema's `endpoint` pattern accept the same endpoints,
    /// so other languages validating against specs/schema refuse what `dp` refuses.
    #[test]
    fn triton_endpoints_agree_with_the_schema_pattern() {
        let pattern = crate::schema::model_spec_schema()
            .pointer("/$defs/TritonSettings/properties/endpoint/pattern")
            .cloned()
            .expect("the endpoint has a pattern");
        let schema = serde_json::json!({ "type": "string", "pattern": pattern });
        let accepted = [
            "http://127.0.0.1:8000",
            "http://127.0.0.1:8000/",
            "http://localhost",
            "http://triton_1.internal-net:1",
            "http://[::1]:65535",
            "http://[::ffff:127.0.0.1]/",
            "http://h:9",
            "http://h:59999",
            "http://h:65099",
        ];
        let refused = [
            ("https://127.0.0.1:8000", "no TLS"),
            ("ftp://127.0.0.1", "not an http:// base URL"),
            ("HTTP://127.0.0.1", "not an http:// base URL"),
            ("127.0.0.1:8000", "not an http:// base URL"),
            ("http://", "names no host"),
            ("http:///", "names no host"),
            ("http://:8000", "names no host"),
            ("http://user@127.0.0.1:8000", "user info"),
            ("http://user:pw@host:1", "user info"),
            ("http://@host", "user info"),
            ("http://h/v2", "path, query or fragment"),
            ("http://h?x", "path, query or fragment"),
            ("http://h#x", "path, query or fragment"),
            ("http://h//", "path, query or fragment"),
            ("http://h:0", "port 0"),
            ("http://h:99999", "from 1 to 65535"),
            ("http://h:65536", "from 1 to 65535"),
            ("http://h:08000", "leading zeros"),
            ("http://h:", "from 1 to 65535"),
            ("http://h:80:80", "from 1 to 65535"),
            ("http://h:-1", "from 1 to 65535"),
            ("http://h:+80", "from 1 to 65535"),
            ("http://[::1", "no closing"),
            ("http://[::1]x", "after the IPv6"),
            ("http://[]:1", "names no host"),
            ("http://[::g]:1", "not a host name"),
            ("http://h st:1", "not a host name"),
            ("http://h\u{1b}[2J:1", "not a host name"),
            ("http://hôte:1", "not a host name"),
        ];
        for endpoint in accepted {
            assert_eq!(check_triton_endpoint(endpoint), None, "{endpoint}");
            assert!(
                jsonschema::is_valid(&schema, &endpoint.into()),
                "{endpoint}"
            );
        }
        for (endpoint, says) in refused {
            let message = check_triton_endpoint(endpoint).expect(endpoint);
            assert!(message.contains(says), "{endpoint}: {message}");
            assert!(message.contains("e.g. http://127.0.0.1:8000"), "{message}");
            assert!(
                !jsonschema::is_valid(&schema, &endpoint.into()),
                "{endpoint}"
            );
        }
    }
}

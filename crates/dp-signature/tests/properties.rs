//! Property tests of the signature's two promises (docs/signatures.md):
//!
//! (a) it does not change when the same spec is written differently: field order, block or
//!     flow style, quoting, comments, number spelling (`256` / `256.0` / `2.56e2`);
//! (b) it does not change when a non-identity field changes;
//! (c) it changes, canonical string and short hash, when any single identity field changes.
//!
//! Specs are generated as an [`Identity`] (the fields a signature reads) and a
//! [`NonIdentity`] (everything else a valid spec may carry), turned into a JSON value and
//! always checked with dp-spec's validator, so every case is a spec a catalog could hold.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use dp_signature::{ModelSignature, Placement, Resolution, model_signature_for};
use dp_spec::{
    Engine, LocationIndex, ModelSpec, Precision, ResolvedDevice, Runtime, SourceDocument,
    SourceFormat,
};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------
// Generated specs
// ---------------------------------------------------------------------------------------

/// The fields a signature reads, including the resolution.
#[derive(Debug, Clone)]
struct Identity {
    model_name: String,
    model_version: String,
    role: String,
    runtime: Runtime,
    engine: Engine,
    precision: Precision,
    placement: Placement,
    preset: Option<String>,
    params: BTreeMap<String, Value>,
    digest: Option<String>,
}

/// Every other field of a spec, including how the primary role is spelled.
#[derive(Debug, Clone)]
struct NonIdentity {
    role_as_field: bool,
    extra_roles: Vec<String>,
    display_name: Option<String>,
    capabilities: BTreeMap<String, bool>,
    spec_precision: Option<Precision>,
    device_policy: Option<&'static str>,
    local_artifacts: Vec<String>,
    tensors: (Vec<Value>, Vec<Value>),
    resources: Option<Value>,
    triton: Value,
    tier: Option<u8>,
    deprecated: Option<bool>,
    alias_count: usize,
    license: Option<String>,
    source: Option<String>,
    metadata: BTreeMap<String, Value>,
}

const PRECISIONS: [Precision; 4] = [
    Precision::Fp32,
    Precision::Fp16,
    Precision::Bf16,
    Precision::Int8,
];

fn model_name() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._-]{0,24}"
}

/// A preset name a spec may use (`dp validate` refuses any other).
fn preset_name() -> impl Strategy<Value = String> {
    prop::sample::select(dp_spec::PRESET_NAMES).prop_map(str::to_owned)
}

fn role_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,12}"
}

/// Free text: versions as people write them, and anything printable.
fn free_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
        "[ -~]{1,12}",
        "\\PC{1,8}",
        "[a-z\\t\\n\\x01 ]{1,6}",
    ]
}

fn precision() -> impl Strategy<Value = Precision> {
    prop::sample::select(PRECISIONS.to_vec())
}

fn digest() -> impl Strategy<Value = String> {
    ("(sha256|blake3)", "[0-9a-f]{64}").prop_map(|(a, h)| format!("{a}:{h}"))
}

fn local_device() -> impl Strategy<Value = Placement> {
    prop_oneof![
        Just(Placement::Local(ResolvedDevice::Cpu)),
        (0_u16..4).prop_map(|i| Placement::Local(ResolvedDevice::Cuda(i))),
    ]
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![4 => "[a-z_]{1,10}", 1 => "\\PC{0,5}", 1 => "[ -~]{0,6}"]
}

fn json_value() -> impl Strategy<Value = Value> {
    let float = prop::num::f64::POSITIVE
        | prop::num::f64::NEGATIVE
        | prop::num::f64::NORMAL
        | prop::num::f64::SUBNORMAL
        | prop::num::f64::ZERO;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Integral floats: the `256` / `256.0` case.
        (-1_000_000_i64..1_000_000).prop_map(|i| json!(i as f64)),
        float.prop_map(|f| json!(f)),
        json_key().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(json_key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_map() -> impl Strategy<Value = BTreeMap<String, Value>> {
    prop::collection::btree_map(json_key(), json_value(), 0..5)
}

fn identity() -> impl Strategy<Value = Identity> {
    let runtime_engine = prop_oneof![
        prop::sample::select(vec![Engine::Candle, Engine::Onnx])
            .prop_map(|e| (Runtime::Inprocess, e)),
        prop::sample::select(vec![Engine::Onnx, Engine::Tensorrt, Engine::Torch])
            .prop_map(|e| (Runtime::Triton, e)),
    ];
    let preprocess = prop::option::of(preset_name()).prop_flat_map(|preset| {
        let params = if preset.is_some() {
            json_map().boxed()
        } else {
            Just(BTreeMap::new()).boxed()
        };
        (Just(preset), params)
    });
    (
        (model_name(), free_text(), role_name()),
        runtime_engine,
        (precision(), local_device()),
        preprocess,
        prop::option::of(digest()),
        digest(),
    )
        .prop_map(
            |(
                (model_name, model_version, role),
                (runtime, engine),
                (precision, device),
                (preset, params),
                digest,
                required_digest,
            )| {
                let (placement, digest) = match runtime {
                    Runtime::Inprocess => (device, Some(digest.unwrap_or(required_digest))),
                    Runtime::Triton => (Placement::Triton, digest),
                };
                // int8 is a quantized graph's precision, which candle does not run.
                let precision = if engine == Engine::Candle && precision == Precision::Int8 {
                    Precision::Fp32
                } else {
                    precision
                };
                Identity {
                    model_name,
                    model_version,
                    role,
                    runtime,
                    engine,
                    precision,
                    placement,
                    preset,
                    params,
                    digest,
                }
            },
        )
}

fn tensors() -> impl Strategy<Value = Vec<Value>> {
    let dtype = prop::sample::select(vec![
        "fp32", "fp16", "bf16", "int64", "int32", "int8", "uint8", "bool", "bytes",
    ]);
    let shape = prop::collection::vec(-1_i64..512, 0..4);
    prop::collection::vec((dtype, shape), 0..3).prop_map(|list| {
        list.into_iter()
            .enumerate()
            // Tensor names must be unique within a spec.
            .map(|(i, (dtype, shape))| json!({"name": format!("t{i}"), "dtype": dtype, "shape": shape}))
            .collect()
    })
}

fn non_identity() -> impl Strategy<Value = NonIdentity> {
    let policy = prop::sample::select(vec!["cpu", "auto", "cuda", "cuda:0", "cuda:3"]);
    let artifact = "[a-z0-9_]{1,8}(/[a-z0-9_]{1,8}\\.[a-z]{1,5}){0,2}";
    let resources = prop::option::of(
        (any::<u32>(), any::<u32>(), prop::option::of(1_u32..1024)).prop_map(
            |(ram, vram, batch)| {
                let mut r = json!({"ram_bytes": ram, "vram_bytes": vram});
                if let Some(b) = batch {
                    r["max_batch_size"] = json!(b);
                }
                r
            },
        ),
    );
    let triton = (
        1_u16..65535,
        "[a-z_]{1,12}",
        prop::option::of("[1-9][0-9]{0,3}"),
        prop::option::of(1_u64..100_000),
        prop::option::of(1_u64..1_000_000),
    )
        .prop_map(|(port, name, version, connect, request)| {
            let mut t = json!({"endpoint": format!("http://127.0.0.1:{port}"), "model_name": name});
            if let Some(v) = version {
                t["model_version"] = json!(v);
            }
            if let Some(c) = connect {
                t["connect_timeout_ms"] = json!(c);
            }
            if let Some(r) = request {
                t["request_timeout_ms"] = json!(r);
            }
            t
        });
    (
        (
            any::<bool>(),
            prop::collection::vec(role_name(), 0..3),
            prop::option::of(free_text()),
            prop::collection::btree_map("[a-z]{1,8}", any::<bool>(), 0..4),
            prop::option::of(precision()),
            prop::option::of(policy),
        ),
        (
            prop::collection::vec(artifact, 1..4),
            (tensors(), tensors()),
            resources,
            triton,
            prop::option::of(0_u8..=2),
            prop::option::of(any::<bool>()),
        ),
        (
            0_usize..3,
            prop::option::of(free_text()),
            prop::option::of(free_text()),
            json_map(),
        ),
    )
        .prop_map(
            |(
                (
                    role_as_field,
                    extra_roles,
                    display_name,
                    capabilities,
                    spec_precision,
                    device_policy,
                ),
                (local_artifacts, tensors, resources, triton, tier, deprecated),
                (alias_count, license, source, metadata),
            )| NonIdentity {
                role_as_field,
                extra_roles,
                display_name,
                capabilities,
                spec_precision,
                device_policy,
                local_artifacts,
                tensors,
                resources,
                triton,
                tier,
                deprecated,
                alias_count,
                license,
                source,
                metadata,
            },
        )
}

fn to_json<T: serde::Serialize>(value: T) -> Value {
    serde_json::to_value(value).unwrap_or_else(|e| panic!("{e}"))
}

/// The spec as a JSON value, in a fixed field order (the YAML renderer shuffles it).
fn spec_json(id: &Identity, other: &NonIdentity) -> Value {
    let mut spec = Map::new();
    let mut put = |key: &str, value: Value| {
        spec.insert(key.to_owned(), value);
    };
    put("model_name", json!(id.model_name));
    put("model_version", json!(id.model_version));
    if other.role_as_field {
        put("role", json!(id.role));
        if !other.extra_roles.is_empty() {
            put("roles", json!(other.extra_roles));
        }
    } else {
        let mut roles = vec![id.role.clone()];
        roles.extend(other.extra_roles.iter().cloned());
        put("roles", json!(roles));
    }
    put("runtime", to_json(id.runtime));
    put("engine", to_json(id.engine));
    // The spec's own precision, except int8 on candle (a spec rule refuses it).
    if let Some(p) = other
        .spec_precision
        .filter(|p| !(id.engine == Engine::Candle && *p == Precision::Int8))
    {
        put("precision", to_json(p));
    }
    if let Some(policy) = other.device_policy {
        put("device_policy", json!(policy));
    }
    match id.runtime {
        Runtime::Inprocess => put("local_artifacts", json!(other.local_artifacts)),
        Runtime::Triton => put("triton", other.triton.clone()),
    }
    if let Some(d) = &id.digest {
        put("weights_digest", json!(d));
    }
    if let Some(p) = &id.preset {
        put("preprocess_preset", json!(p));
    }
    if !id.params.is_empty() {
        put("preprocess_params", json!(id.params));
    }
    if let Some(d) = &other.display_name {
        put("display_name", json!(d));
    }
    if !other.capabilities.is_empty() {
        put("capabilities", json!(other.capabilities));
    }
    if !other.tensors.0.is_empty() {
        put("input_schema", Value::Array(other.tensors.0.clone()));
    }
    if !other.tensors.1.is_empty() {
        put("output_schema", Value::Array(other.tensors.1.clone()));
    }
    if let Some(r) = &other.resources {
        put("resource_requirements", r.clone());
    }
    if let Some(t) = other.tier {
        put("tier", json!(t));
    }
    if let Some(d) = other.deprecated {
        put("deprecated", json!(d));
    }
    if other.alias_count > 0 {
        // Derived from the name so that an alias never repeats it.
        let aliases: Vec<String> = (0..other.alias_count)
            .map(|i| format!("{}-alias{i}", id.model_name))
            .collect();
        put("aliases", json!(aliases));
    }
    if let Some(l) = &other.license {
        put("license", json!(l));
    }
    if let Some(s) = &other.source {
        put("source", json!(s));
    }
    if !other.metadata.is_empty() {
        put("metadata", json!(other.metadata));
    }
    Value::Object(spec)
}

fn validate(value: &Value) -> ModelSpec {
    dp_spec::validate_value("generated.yaml".as_ref(), value, &LocationIndex::default())
        .unwrap_or_else(|d| panic!("generated spec is invalid: {d:#?}\n{value:#}"))
}

fn signature(id: &Identity, other: &NonIdentity) -> ModelSignature {
    let spec = validate(&spec_json(id, other));
    model_signature_for(&spec, &Resolution::new(id.placement, id.precision))
}

// ---------------------------------------------------------------------------------------
// Rendering one spec as many different YAML texts
// ---------------------------------------------------------------------------------------

/// SplitMix64: a tiny deterministic generator for rendering choices, seeded by proptest so
/// failures shrink and replay.
struct Choices(u64);

impl Choices {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn coin(&mut self) -> bool {
        self.below(2) == 0
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

struct YamlRenderer {
    choices: Choices,
    step: usize,
}

impl YamlRenderer {
    fn render(value: &Value, seed: u64) -> String {
        let mut renderer = Self {
            choices: Choices(seed),
            step: 2,
        };
        renderer.step = [2, 3, 4][renderer.choices.below(3)];
        let mut out = String::new();
        if renderer.choices.coin() {
            out.push_str("# a generated spec\n");
        }
        if renderer.choices.coin() {
            out.push_str("---\n");
        }
        if renderer.choices.below(4) == 0 {
            let flow = renderer.flow(value);
            out.push_str(&flow);
            out.push('\n');
        } else if let Value::Object(map) = value {
            renderer.block_mapping(map, 0, &mut out);
        }
        out
    }

    fn entries<'a>(&mut self, map: &'a Map<String, Value>) -> Vec<(&'a String, &'a Value)> {
        let mut entries: Vec<_> = map.iter().collect();
        self.choices.shuffle(&mut entries);
        entries
    }

    fn block_mapping(&mut self, map: &Map<String, Value>, indent: usize, out: &mut String) {
        for (key, value) in self.entries(map) {
            if self.choices.below(6) == 0 {
                let _ = writeln!(out, "{:indent$}# about {}", "", key.escape_default());
            }
            let _ = write!(out, "{:indent$}{}:", "", self.scalar_string(key, true));
            self.block_value(value, indent, true, out);
        }
    }

    fn block_sequence(&mut self, items: &[Value], indent: usize, out: &mut String) {
        for item in items {
            let _ = write!(out, "{:indent$}-", "");
            self.block_value(item, indent, false, out);
        }
    }

    /// Writes a value after `key:` or `-` (the rest of the line and what follows).
    fn block_value(&mut self, value: &Value, indent: usize, after_key: bool, out: &mut String) {
        let nested_block = match value {
            Value::Object(map) => !map.is_empty() && self.choices.below(3) != 0,
            Value::Array(items) => !items.is_empty() && self.choices.below(3) != 0,
            _ => false,
        };
        if !nested_block {
            let text = self.flow(value);
            let _ = write!(out, " {text}");
            if self.choices.below(5) == 0 {
                out.push_str(" # trailing comment");
            }
            out.push('\n');
            return;
        }
        if self.choices.below(5) == 0 {
            out.push_str(" # nested");
        }
        out.push('\n');
        match value {
            Value::Object(map) => self.block_mapping(map, indent + self.step, out),
            Value::Array(items) => {
                // YAML lets a sequence under a mapping key sit at the key's indentation.
                let inner = if after_key && self.choices.coin() {
                    indent
                } else {
                    indent + self.step
                };
                self.block_sequence(items, inner, out);
            }
            _ => {}
        }
    }

    fn flow(&mut self, value: &Value) -> String {
        match value {
            Value::Null => ["null", "~", "Null"][self.choices.below(3)].to_owned(),
            Value::Bool(b) => {
                let spellings = if *b {
                    ["true", "True", "TRUE"]
                } else {
                    ["false", "False", "FALSE"]
                };
                spellings[self.choices.below(3)].to_owned()
            }
            Value::Number(n) => self.number(n),
            Value::String(s) => self.scalar_string(s, false),
            Value::Array(items) => {
                let parts: Vec<String> = items.iter().map(|v| self.flow(v)).collect();
                format!("[{}]", parts.join(", "))
            }
            Value::Object(map) => {
                let parts: Vec<String> = self
                    .entries(map)
                    .into_iter()
                    .map(|(k, v)| format!("{}: {}", self.scalar_string(k, true), self.flow(v)))
                    .collect();
                format!("{{{}}}", parts.join(", "))
            }
        }
    }

    fn number(&mut self, n: &serde_json::Number) -> String {
        if let Some(u) = n.as_u64() {
            return match self.choices.below(4) {
                0 => format!("0x{u:x}"),
                1 => format!("0o{u:o}"),
                2 => format!("+{u}"),
                _ => u.to_string(),
            };
        }
        if let Some(i) = n.as_i64() {
            return i.to_string();
        }
        let f = n.as_f64().unwrap_or_default();
        // 2^53: integral floats below it print as exact integers the parser reads back.
        if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 && self.choices.coin() {
            return format!("{}", f as i64);
        }
        if self.choices.coin() {
            format!("{f:?}")
        } else {
            format!("{f:e}")
        }
    }

    /// A string as a plain (when unambiguous), single-quoted or double-quoted scalar.
    fn scalar_string(&mut self, s: &str, is_key: bool) -> String {
        let plain_ok = {
            let mut chars = s.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| {
                    c.is_ascii_alphanumeric()
                        || matches!(c, '_' | '.' | '/' | '-')
                        || (c == ':' && !is_key)
                })
                && !s.ends_with(':')
                && !matches!(
                    s,
                    "true"
                        | "True"
                        | "TRUE"
                        | "false"
                        | "False"
                        | "FALSE"
                        | "null"
                        | "Null"
                        | "NULL"
                )
        };
        let single_ok = s.chars().all(|c| (' '..='~').contains(&c));
        match self.choices.below(3) {
            0 if plain_ok => s.to_owned(),
            1 if single_ok => format!("'{}'", s.replace('\'', "''")),
            _ => self.double_quoted(s),
        }
    }

    fn double_quoted(&mut self, s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                ' '..='~' => out.push(c),
                c if c.is_alphanumeric() && self.choices.coin() => out.push(c),
                c if u32::from(c) <= 0xFF => {
                    let _ = write!(out, "\\x{:02x}", u32::from(c));
                }
                c if u32::from(c) <= 0xFFFF => {
                    let _ = write!(out, "\\u{:04X}", u32::from(c));
                }
                c => {
                    let _ = write!(out, "\\U{:08x}", u32::from(c));
                }
            }
        }
        out.push('"');
        out
    }
}

fn parse_yaml(text: &str) -> ModelSpec {
    let doc = SourceDocument::parse_str("rendered.yaml", text, SourceFormat::Yaml)
        .unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{text}"));
    dp_spec::validate_document(&doc)
        .unwrap_or_else(|d| panic!("rendered YAML is invalid: {d:#?}\n{text}"))
}

// ---------------------------------------------------------------------------------------
// Identity changes
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum ParamChange {
    Set(String, Value),
    Remove(usize),
}

#[derive(Debug, Clone)]
enum Change {
    ModelName(String),
    ModelVersion(String),
    Role(String),
    Runtime,
    Engine(usize),
    Precision(usize),
    Device(Placement),
    Preset(Option<String>),
    Params(ParamChange),
    Digest(Option<String>),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        model_name().prop_map(Change::ModelName),
        free_text().prop_map(Change::ModelVersion),
        role_name().prop_map(Change::Role),
        Just(Change::Runtime),
        any::<usize>().prop_map(Change::Engine),
        any::<usize>().prop_map(Change::Precision),
        local_device().prop_map(Change::Device),
        prop::option::of(preset_name()).prop_map(Change::Preset),
        prop_oneof![
            (json_key(), json_value()).prop_map(|(k, v)| ParamChange::Set(k, v)),
            any::<usize>().prop_map(ParamChange::Remove),
        ]
        .prop_map(Change::Params),
        prop::option::of(digest()).prop_map(Change::Digest),
    ]
}

/// Whether two JSON values are the same parameter value (numbers compared by value, so
/// `256` and `256.0` are one). Used only to skip changes that are no change.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            x.as_f64() == y.as_f64()
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// Applies `change` to a copy of `base`; may first adjust `base` (in ways that keep it
/// valid) so the change is a one-field change of a valid spec. `None` when the change does
/// not apply or changes nothing.
fn changed(base: &mut Identity, change: &Change) -> Option<Identity> {
    match change {
        Change::Runtime => {
            // onnx runs on both runtimes; inprocess needs a digest.
            base.engine = Engine::Onnx;
            if base.digest.is_none() {
                base.digest = Some(format!("sha256:{}", "ab".repeat(32)));
            }
        }
        Change::Params(_) if base.preset.is_none() => base.preset = Some("image_clip".into()),
        _ => {}
    }
    let mut next = base.clone();
    match change {
        Change::ModelName(name) => {
            let alias_clash = name.starts_with(&format!("{}-alias", base.model_name));
            if *name == base.model_name || alias_clash {
                return None;
            }
            next.model_name.clone_from(name);
        }
        Change::ModelVersion(version) => {
            if *version == base.model_version {
                return None;
            }
            next.model_version.clone_from(version);
        }
        Change::Role(role) => {
            if *role == base.role {
                return None;
            }
            next.role.clone_from(role);
        }
        Change::Runtime => {
            next.runtime = match base.runtime {
                Runtime::Inprocess => Runtime::Triton,
                Runtime::Triton => Runtime::Inprocess,
            };
        }
        Change::Engine(offset) => {
            let engines = base.runtime.supported_engines();
            let at = engines.iter().position(|e| *e == base.engine)?;
            // An offset in 1..len never lands on the same engine.
            next.engine = engines[(at + 1 + offset % (engines.len() - 1)) % engines.len()];
        }
        Change::Precision(offset) => {
            let at = PRECISIONS.iter().position(|p| *p == base.precision)?;
            next.precision =
                PRECISIONS[(at + 1 + offset % (PRECISIONS.len() - 1)) % PRECISIONS.len()];
        }
        Change::Device(placement) => {
            // A Triton model's device is always `triton`: the server owns placement.
            if base.runtime == Runtime::Triton || *placement == base.placement {
                return None;
            }
            next.placement = *placement;
        }
        Change::Preset(preset) => {
            // Parameters need a preset to apply to.
            if (preset.is_none() && !base.params.is_empty()) || *preset == base.preset {
                return None;
            }
            next.preset.clone_from(preset);
        }
        Change::Params(ParamChange::Set(key, value)) => {
            if base
                .params
                .get(key)
                .is_some_and(|old| same_json(old, value))
            {
                return None;
            }
            next.params.insert(key.clone(), value.clone());
        }
        Change::Params(ParamChange::Remove(index)) => {
            let key = base.params.keys().nth(index % base.params.len().max(1))?;
            next.params.remove(key);
        }
        Change::Digest(digest) => {
            if (digest.is_none() && base.runtime == Runtime::Inprocess) || *digest == base.digest {
                return None;
            }
            next.digest.clone_from(digest);
        }
    }
    // int8 is a quantized graph's precision, which candle does not run (a spec rule).
    if next.engine == Engine::Candle && next.precision == Precision::Int8 {
        return None;
    }
    Some(next)
}

/// The top-level fields a [`NonIdentity`] controls, grouped so that swapping one group
/// keeps the spec valid (`role`/`roles` move together: together they spell the primary
/// role, which is identity).
const NON_IDENTITY_GROUPS: [&[&str]; 16] = [
    &["role", "roles"],
    &["display_name"],
    &["capabilities"],
    &["precision"],
    &["device_policy"],
    &["local_artifacts"],
    &["input_schema"],
    &["output_schema"],
    &["resource_requirements"],
    &["triton"],
    &["tier"],
    &["deprecated"],
    &["aliases"],
    &["license"],
    &["source"],
    &["metadata"],
];

// ---------------------------------------------------------------------------------------
// The properties
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(Config {
        cases: 192,
        // Failing cases are printed (with their seed); no regression files are written.
        failure_persistence: None,
        ..Config::default()
    })]

    /// (a) The same spec, written as YAML in shuffled order and random styles, has the
    /// same signature.
    #[test]
    fn yaml_spelling_does_not_change_the_signature(
        id in identity(),
        other in non_identity(),
        seeds in prop::array::uniform3(any::<u64>()),
    ) {
        let value = spec_json(&id, &other);
        let resolution = Resolution::new(id.placement, id.precision);
        let expected = model_signature_for(&validate(&value), &resolution);
        for seed in seeds {
            let text = YamlRenderer::render(&value, seed);
            let reread = model_signature_for(&parse_yaml(&text), &resolution);
            prop_assert_eq!(reread.as_str(), expected.as_str(), "YAML:\n{}", text);
            prop_assert_eq!(reread.short(), expected.short());
        }
    }

    /// (b) Changing any non-identity fields (any subset, to other valid values) keeps the
    /// signature.
    #[test]
    fn non_identity_fields_do_not_change_the_signature(
        id in identity(),
        first in non_identity(),
        second in non_identity(),
        mask in 1_u32..(1 << NON_IDENTITY_GROUPS.len()),
    ) {
        let base = spec_json(&id, &first);
        let donor = spec_json(&id, &second);
        let mut mixed = base.clone();
        if let (Value::Object(mixed), Value::Object(donor)) = (&mut mixed, &donor) {
            for (bit, group) in NON_IDENTITY_GROUPS.iter().enumerate() {
                if mask & (1 << bit) == 0 {
                    continue;
                }
                for key in *group {
                    match donor.get(*key) {
                        Some(v) => mixed.insert((*key).to_owned(), v.clone()),
                        None => mixed.remove(*key),
                    };
                }
            }
        }
        let resolution = Resolution::new(id.placement, id.precision);
        let before = model_signature_for(&validate(&base), &resolution);
        let after = model_signature_for(&validate(&mixed), &resolution);
        prop_assert_eq!(before.as_str(), after.as_str());
        prop_assert_eq!(before.short(), after.short());
    }

    /// (c) Changing any single identity field to another valid value changes both the
    /// canonical string and the short hash.
    #[test]
    fn every_identity_field_changes_the_signature(
        mut id in identity(),
        other in non_identity(),
        change in change(),
    ) {
        let next = changed(&mut id, &change);
        prop_assume!(next.is_some());
        let Some(next) = next else { return Ok(()) };
        let before = signature(&id, &other);
        let after = signature(&next, &other);
        prop_assert_ne!(before.as_str(), after.as_str(), "{:?}", change);
        prop_assert_ne!(before.short(), after.short(), "{:?}", change);
    }
}

/// The renderer really produces different spellings (so property (a) tests something).
#[test]
fn renderer_varies_style_order_and_quoting() {
    let value = json!({
        "model_name": "m", "model_version": "1.0.0", "role": "r",
        "runtime": "inprocess", "engine": "onnx", "local_artifacts": ["a", "b"],
        "weights_digest": format!("sha256:{}", "0".repeat(64)),
        "preprocess_preset": "image_clip",
        "preprocess_params": {"max_length": 256.0, "nested": {"b": [1, 2], "a": "x y"}},
        "metadata": {"k": "v"}
    });
    let texts: std::collections::BTreeSet<String> = (0..32)
        .map(|seed| YamlRenderer::render(&value, seed))
        .collect();
    assert!(texts.len() > 24, "only {} distinct renderings", texts.len());
    assert!(texts.iter().any(|t| t.contains('{') && t.contains("- ")));
    assert!(texts.iter().any(|t| t.contains("max_length: 256\n")
        || t.contains("max_length: 256,")
        || t.contains("max_length: 256}")));
    assert!(texts.iter().any(|t| t.contains("'x y'")));
    assert!(texts.iter().any(|t| t.contains('#')));
    let expected = validate(&value);
    for text in &texts {
        let spec = parse_yaml(text);
        let resolution = Resolution::new(Placement::Local(ResolvedDevice::Cpu), Precision::Fp32);
        assert_eq!(
            model_signature_for(&spec, &resolution),
            model_signature_for(&expected, &resolution),
            "{text}"
        );
    }
}

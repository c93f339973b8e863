//! Resolution by name, alias and role; device policy; missing providers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use dp_manager::{ModelManager, RoleReason};
use dp_spec::{ErrorCode, ResolvedDevice};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use crate::common::{TestProvider, builder, catalog, spec, triton_spec};

fn role_catalog() -> Vec<(String, String)> {
    let caps = |c: &str| format!("capabilities: {{ {c} }}\n");
    vec![
        spec(
            "a-legacy",
            "text_embedding",
            &format!("deprecated: true\n{}", caps("text: true, embedding: true")),
        ),
        spec(
            "b-small",
            "text_embedding",
            &caps("text: true, embedding: false"),
        ),
        spec(
            "c-large",
            "text_embedding",
            &format!("aliases: [large]\n{}", caps("text: true, embedding: true")),
        ),
        spec(
            "d-vision",
            "text_embedding",
            &caps("text: true, embedding: true, vision: true"),
        ),
        // Sorts first in catalog order (its directory name), whatever its model name.
        spec(
            "z-multi",
            "aaa",
            &format!(
                "roles: [image_embedding]\n{}",
                caps("vision: true, embedding: true")
            ),
        ),
        spec(
            "y-image",
            "image_embedding",
            &caps("vision: true, embedding: true"),
        ),
    ]
}

fn manager() -> (tempfile::TempDir, ModelManager, Arc<TestProvider>) {
    let (dir, catalog) = catalog(&role_catalog());
    let provider = TestProvider::new();
    let manager = builder(catalog, &provider).build().expect("builds");
    (dir, manager, provider)
}

fn choose(
    manager: &ModelManager,
    role: &str,
    caps: &[&str],
    preferred: Option<&str>,
) -> (String, RoleReason) {
    let r = manager
        .resolve_role(role, caps, preferred)
        .expect("resolves");
    (r.entry.spec.model_name.clone(), r.reason)
}

/// Role, capabilities, preferred model; expected model and reason.
type Case<'a> = (&'a str, &'a [&'a str], Option<&'a str>, &'a str, RoleReason);

#[test]
fn role_resolution_prefers_then_follows_catalog_order() {
    let (_dir, manager, _) = manager();
    let first = RoleReason::FirstInCatalogOrder {
        preferred_rejected: false,
    };
    let rejected = RoleReason::FirstInCatalogOrder {
        preferred_rejected: true,
    };
    let cases: [Case<'_>; 8] = [
        ("text_embedding", &["embedding"], None, "c-large", first),
        ("text_embedding", &[], None, "b-small", first),
        (
            "text_embedding",
            &["embedding"],
            Some("d-vision"),
            "d-vision",
            RoleReason::Preferred,
        ),
        (
            "text_embedding",
            &["embedding"],
            Some("large"),
            "c-large",
            RoleReason::Preferred,
        ),
        (
            "text_embedding",
            &["embedding"],
            Some("b-small"),
            "c-large",
            rejected,
        ),
        (
            "text_embedding",
            &["embedding"],
            Some("nope"),
            "c-large",
            rejected,
        ),
        // Asked for by name: a deprecated model is allowed (with a warning).
        (
            "text_embedding",
            &["embedding"],
            Some("a-legacy"),
            "a-legacy",
            RoleReason::Preferred,
        ),
        ("image_embedding", &["vision"], None, "z-multi", first),
    ];
    for (role, caps, preferred, expected, reason) in cases {
        assert_eq!(
            choose(&manager, role, caps, preferred),
            (expected.to_owned(), reason),
            "{role} {caps:?} preferred {preferred:?}"
        );
    }
}

#[test]
fn role_unresolved_says_what_each_candidate_lacks() {
    let (_dir, manager, _) = manager();
    let err = manager
        .resolve_role("text_embedding", &["embedding", "audio"], None)
        .expect_err("nothing has audio");
    assert_eq!(err.error_code, ErrorCode::RoleUnresolved);
    assert_eq!(
        err.message,
        "no non-deprecated model has role \"text_embedding\" with capabilities [embedding, audio]; \
         candidates lacking: a-legacy (deprecated; missing audio), b-small (missing embedding, audio), \
         c-large (missing audio), d-vision (missing audio)"
    );
    assert_eq!(err.details["candidates"][0]["model"], "a-legacy");

    let err = manager
        .resolve_role("speech", &[], None)
        .expect_err("no such role");
    assert_eq!(
        err.message,
        "no non-deprecated model has role \"speech\" with capabilities []; no model in the \
         catalog has this role"
    );
}

#[test]
fn names_aliases_and_deprecated_models_resolve() {
    let (_dir, manager, provider) = manager();
    assert_eq!(
        manager.resolve("large").expect("alias").spec.model_name,
        "c-large"
    );
    let legacy = manager.resolve("a-legacy").expect("deprecated, by name");
    assert!(legacy.spec.deprecated);
    let handle = manager
        .get("a-legacy")
        .expect("deprecated models load by name");
    assert_eq!(handle.key().model_name, "a-legacy");
    assert_eq!(provider.loads(), 1);

    let err = manager.get("missing").expect_err("unknown");
    assert_eq!(err.error_code, ErrorCode::ModelNotFound);
    assert_eq!(
        err.message,
        "no model named \"missing\"; run `dp list` to see the catalog"
    );
    assert_eq!(err.details["model"], "missing");
    assert!(manager.resolve("missing").is_err());
}

/// Records the fields of every `role_resolution` event.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Events {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields(BTreeMap::new());
        event.record(&mut fields);
        if fields.0.get("event").map(String::as_str) == Some("role_resolution") {
            self.0.lock().expect("lock").push(fields.0);
        }
    }
}

#[test]
fn role_resolution_emits_an_event_with_its_reason() {
    let (_dir, manager, _) = manager();
    let events = Events::default();
    let subscriber = tracing_subscriber::registry().with(events.clone());
    tracing::subscriber::with_default(subscriber, || {
        manager
            .resolve_role("text_embedding", &["embedding"], Some("b-small"))
            .expect("resolves");
    });
    let events = events.0.lock().expect("lock");
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e["role"], "text_embedding");
    assert_eq!(e["capabilities"], "[\"embedding\"]");
    assert_eq!(e["chosen"], "c-large");
    assert_eq!(e["reason"], "catalog_order_preferred_rejected");
}

#[test]
fn cuda_policies_never_fall_back_to_the_cpu() {
    let files = [
        spec("pinned", "r", "device_policy: cuda\n"),
        spec("pinned1", "r", "device_policy: cuda:1\n"),
        spec("auto", "r", ""),
        triton_spec("served", "r", "device_policy: cuda\n"),
    ];
    let (_dir, catalog) = catalog(&files);
    let provider = TestProvider::new();
    let manager = builder(catalog.clone(), &provider)
        .build()
        .expect("a CUDA spec does not fail the build");
    let err = manager.get("pinned").expect_err("no CUDA here");
    assert_eq!(err.error_code, ErrorCode::DeviceUnavailable);
    assert_eq!(
        err.message,
        "model pinned asks for cuda but CUDA is not available in this build/machine; set \
         device_policy: cpu or auto, or run a CUDA build (`cargo xtask gpu-build`) on a \
         machine with an NVIDIA GPU"
    );
    let err = manager.cache_key("pinned1").expect_err("no CUDA here");
    assert!(
        err.message.starts_with("model pinned1 asks for cuda:1 but"),
        "{}",
        err.message
    );
    assert_eq!(provider.loads(), 0, "never loaded anywhere");
    assert_eq!(
        manager.cache_key("auto").expect("cpu").device,
        ResolvedDevice::Cpu
    );
    assert_eq!(
        manager.cache_key("served").expect("server-placed").device,
        ResolvedDevice::Cpu
    );
    let auto = manager.get("auto").expect("auto runs on the CPU");
    assert_eq!(auto.key().to_string(), "auto@cpu/fp32");

    let with_cuda = builder(catalog, &provider)
        .cuda_available(true)
        .build()
        .expect("builds");
    assert_eq!(
        with_cuda.cache_key("auto").expect("key").device,
        ResolvedDevice::Cuda(0)
    );
    assert_eq!(
        with_cuda.cache_key("pinned1").expect("key").device,
        ResolvedDevice::Cuda(1)
    );
    assert_eq!(
        with_cuda.cache_key("served").expect("key").device,
        ResolvedDevice::Cpu
    );
    assert_eq!(
        with_cuda.get("pinned").expect("loads").key().device,
        ResolvedDevice::Cuda(0)
    );
}

#[test]
fn probed_devices_decide_indices_and_the_gpu_memory_budget() {
    let files = [
        spec("first", "r", "device_policy: cuda:0\n"),
        spec("second", "r", "device_policy: cuda:1\n"),
        spec(
            "huge",
            "r",
            "device_policy: cuda\nresource_requirements: { vram_bytes: 2000000000 }\n",
        ),
        spec(
            "fits",
            "r",
            "device_policy: auto\nresource_requirements: { vram_bytes: 600000000 }\n",
        ),
    ];
    let (_dir, catalog) = catalog(&files);
    let provider = TestProvider::new();
    let gpu = dp_spec::CudaDeviceInfo {
        index: 0,
        name: "test GPU".into(),
        compute_capability: (9, 0),
        total_bytes: 2_000_000_000,
        free_bytes: 1_000_000_000,
    };
    let manager = builder(catalog, &provider)
        .devices(dp_manager::DeviceInventory::from_devices(vec![gpu.clone()]))
        .build()
        .expect("builds");
    assert_eq!(
        manager.cache_key("first").expect("cuda:0 exists").device,
        ResolvedDevice::Cuda(0)
    );
    let err = manager.get("second").expect_err("one GPU only");
    assert_eq!(err.error_code, ErrorCode::DeviceUnavailable);
    assert_eq!(err.details["cuda_devices"], 1);
    assert!(err.message.contains("cuda:1"), "{}", err.message);
    // No budget given: the free memory the probe read is the budget.
    let err = manager.get("huge").expect_err("2 GB declared, 1 GB free");
    assert_eq!(err.error_code, ErrorCode::InsufficientGpuMemory);
    let fits = manager.get("fits").expect("600 MB of 1 GB free");
    assert_eq!(fits.key().device, ResolvedDevice::Cuda(0));
    assert_eq!(manager.status().devices.cuda_devices(), [gpu]);
    assert_eq!(provider.loads(), 1, "only the model that fits was loaded");
}

#[test]
fn a_model_without_provider_names_the_cargo_feature() {
    let (_dir, catalog) = catalog(&[
        spec("cand", "r", ""),
        (
            "r/onx.yaml".to_owned(),
            spec("onx", "r", "")
                .1
                .replace("engine: candle", "engine: onnx"),
        ),
        triton_spec("tri", "r", ""),
    ]);
    let manager = ModelManager::builder(catalog, "/nonexistent")
        .reaper(false)
        .build()
        .expect("builds");
    for (name, feature) in [("cand", "candle"), ("onx", "onnx"), ("tri", "triton")] {
        let err = manager.get(name).expect_err("no provider registered");
        assert_eq!(err.error_code, ErrorCode::ProviderUnavailable);
        assert!(
            err.message.contains(&format!("cargo feature `{feature}`")),
            "{}",
            err.message
        );
        assert_eq!(err.details["cargo_feature"], feature);
    }
    assert!(manager.status().models.is_empty(), "nothing is cached");
}

//! Rows of the `input_rows` area: a Triton host allowed by NAME is trusted only for the
//! addresses it resolves to. `/etc/hosts` cannot be edited in a test, so the rows use the
//! pure check (`localhost` resolving elsewhere) and a name the real system resolver maps
//! off loopback with no configuration: `3221225985`, which URL parsing takes for a name
//! and `getaddrinfo` reads as 192.0.2.1 (inet_aton's one-number form; TEST-NET-1, where
//! a connection attempt would wait for its timeout).

use super::*;

/// A host that is a name to URLs and 192.0.2.1 to the system resolver.
const NAME_OFF_LOOPBACK: &str = "3221225985";

/// The fake-Triton spec, its endpoint on `NAME_OFF_LOOPBACK` (nothing listens there).
fn spec_on_the_name(fx: &Fixture) {
    fake_triton_spec(fx, 8000);
    let path = fx.catalog_dir().join("regression/remote-affine.json");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(path, text.replace("127.0.0.1", NAME_OFF_LOOPBACK)).unwrap();
}

/// A Triton provider allowing `NAME_OFF_LOOPBACK` by name.
fn provider_allowing_the_name() -> TritonProvider {
    TritonProvider::new(TritonProviderConfig {
        allowed_hosts: vec![NAME_OFF_LOOPBACK.to_owned()],
        ..TritonProviderConfig::default()
    })
}

pub(crate) fn rows() -> Vec<Case> {
    use ErrorCode as C;
    vec![
        Case {
            // What `/etc/hosts` mapping `localhost` to another machine gives the resolver.
            name: "triton_localhost_resolving_off_loopback",
            needs: Needs::Nothing,
            setup: |_| {},
            action: |_| {
                let allowed = TritonProviderConfig::default().allowed_hosts;
                let resolved = ["10.1.2.3:8000".parse().unwrap()];
                dp_provider_triton::check_resolved_addresses("localhost", &resolved, &allowed)
                    .map_err(|err| Refusal::from(ModelError::from(err)))
            },
            code: C::NetworkForbidden,
            says: &[
                "\"localhost\" resolved to 10.1.2.3",
                "neither loopback nor",
                "/etc/hosts",
                "allowed_hosts",
            ],
        },
        Case {
            // The manager, told the name is allowed, resolves it when it is built.
            name: "triton_allowed_name_resolving_off_loopback_fails_the_build",
            needs: Needs::Nothing,
            setup: spec_on_the_name,
            action: |fx| {
                let manager = ModelManager::builder(fx.catalog()?, fx.models())
                    .provider(Arc::new(provider_allowing_the_name()))
                    .allowed_triton_hosts([NAME_OFF_LOOPBACK.to_owned()])
                    .embedding_cache(EmbeddingCacheConfig::disabled())
                    .reaper(false)
                    .build()?;
                drop(manager.get("remote-affine")?);
                Ok(())
            },
            code: C::NetworkForbidden,
            says: &[
                "\"3221225985\" resolved to 192.0.2.1",
                "/etc/hosts",
                "allowed_triton_hosts",
            ],
        },
        Case {
            // The provider on its own (a caller bypassing the manager): its resolver refuses
            // before the connector dials, so the 300 ms connect timeout never runs out.
            name: "triton_allowed_name_resolving_off_loopback_is_never_dialed",
            needs: Needs::Nothing,
            setup: spec_on_the_name,
            action: |fx| {
                let catalog = fx.catalog()?;
                let spec = &catalog.entries()[0].spec;
                let started = Instant::now();
                let result = provider_allowing_the_name().load_spec(spec);
                assert!(started.elapsed() < Duration::from_millis(250), "it dialed");
                result.map(drop).map_err(|err| ModelError::from(err).into())
            },
            code: C::NetworkForbidden,
            says: &[
                "\"3221225985\" resolved to 192.0.2.1",
                "/etc/hosts",
                "TritonProviderConfig::allowed_hosts",
            ],
        },
    ]
}

//! [`TritonClient`]: one endpoint, one keep-alive connection pool (`ureq::Agent`), and the
//! KServe v2 calls the provider needs, with bounded retries for idempotent calls.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use dp_spec::NamedTensors;
use serde::Deserialize;
use serde_json::Value;
use ureq::http::{HeaderMap, Uri};
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use crate::endpoint::{Endpoint, check_resolved_addresses};
use crate::error::TritonError;
use crate::wire::{self, INFERENCE_HEADER, OutputRequest, TensorEncoding};

/// How often and how patiently idempotent calls are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// Wait before the first retry; doubled after each, up to `max_backoff`.
    pub initial_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // Short: a refused connection is answered at once, and "no server" must be reported
        // well under a second.
        Self {
            attempts: 3,
            initial_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(400),
        }
    }
}

/// Settings of one client (one endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientSettings {
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for a whole call, including reading the body (this also bounds a
    /// server that trickles its response, byte by byte).
    pub request_timeout: Duration,
    /// The largest response body accepted, in bytes.
    pub max_response_bytes: u64,
    /// Retries of idempotent calls.
    pub retry: RetryPolicyKey,
}

/// [`RetryPolicy`] as a hashable key (durations in milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetryPolicyKey(pub u32, pub u64, pub u64);

impl From<RetryPolicy> for RetryPolicyKey {
    fn from(p: RetryPolicy) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self(p.attempts, ms(p.initial_backoff), ms(p.max_backoff))
    }
}

/// Whether a call may be sent again after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotence {
    /// Reads (health, metadata, config, index): retried on any transport failure and 5xx.
    Idempotent,
    /// Inference of a stateless model: re-sending computes the same answer and changes no
    /// server state, so it is retried — but only when the connection failed (refused,
    /// reset, closed), never after a timeout (the server may still be working on it, and a
    /// retry would double its load) nor after any HTTP status.
    StatelessInference,
    /// Everything else (load/unload, inference of sequence models): sent once.
    Once,
}

/// A model's tensor as its metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TensorMetadata {
    /// The tensor name.
    pub name: String,
    /// Triton datatype (`FP32`, `INT64`, `BYTES`…).
    pub datatype: String,
    /// Dimensions, `-1` for dynamic ones (batch included when batching is on).
    pub shape: Vec<i64>,
}

/// `GET /v2/models/<m>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ModelMetadata {
    /// The model name.
    pub name: String,
    /// Versions available.
    #[serde(default)]
    pub versions: Vec<String>,
    /// Backend or platform (`python`, `onnxruntime_onnx`…).
    #[serde(default)]
    pub platform: String,
    /// Inputs.
    #[serde(default)]
    pub inputs: Vec<TensorMetadata>,
    /// Outputs.
    #[serde(default)]
    pub outputs: Vec<TensorMetadata>,
}

/// One row of `POST /v2/repository/index`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RepositoryEntry {
    /// The model name.
    pub name: String,
    /// The version, when loaded.
    #[serde(default)]
    pub version: Option<String>,
    /// `READY`, `UNAVAILABLE`, `LOADING`… (absent for models never loaded).
    #[serde(default)]
    pub state: Option<String>,
    /// Why it is in that state.
    #[serde(default)]
    pub reason: Option<String>,
}

/// One response: status, headers, body.
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    /// The server's error message (`{"error": "..."}`), or the body as text.
    fn message(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&self.body)
                    .chars()
                    .take(500)
                    .collect()
            })
    }
}

/// A client of one Triton endpoint. Cheap to share (`Arc`); the agent's pool keeps
/// connections alive between calls and drops dead ones, so a restarted server is reached
/// again without a new client.
#[derive(Debug)]
pub struct TritonClient {
    endpoint: Endpoint,
    agent: ureq::Agent,
    settings: ClientSettings,
    retry: RetryPolicy,
    allow_model_control: bool,
}

/// Percent-encodes a path segment (model names are free text for Triton).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `/v2/models/<m>[/versions/<v>]`.
fn model_path(model: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("/v2/models/{}/versions/{}", segment(model), segment(v)),
        None => format!("/v2/models/{}", segment(model)),
    }
}

/// Whether a 400 from Triton means "no such model / not ready" rather than bad data.
fn means_model_missing(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "unknown model",
        "not found",
        "not ready",
        "no available version",
        "is not loaded",
        "unavailable",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// Resolves an IP-literal host (`127.0.0.1`, `[::1]`) without a lookup and hands names
/// to ureq's default resolver, then refuses unless every address is loopback or allowed by
/// IP ([`check_resolved_addresses`]): the connector only ever dials what passed.
///
/// ureq resolves the host on every request, before it looks for a pooled connection, and
/// with a timeout configured its default resolver runs each lookup on a new thread: one
/// thread spawned per request. Measured on a 2-core machine against a local server, that
/// was one `clone3` per request; endpoints are nearly always IP literals, which need no
/// lookup at all. (`ureq::unversioned` has no semver promise; the workspace pins ureq.)
#[derive(Debug, Default)]
struct LiteralFirstResolver {
    lookup: DefaultResolver,
    /// The provider's allowed hosts; their IP addresses may be dialed besides loopback.
    allowed_hosts: Vec<String>,
}

impl Resolver for LiteralFirstResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().unwrap_or_default();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let literal = uri.authority().and_then(|authority| {
            let ip = host.parse::<IpAddr>().ok()?;
            Some(SocketAddr::new(ip, authority.port_u16()?))
        });
        let addrs = match literal {
            Some(addr) => {
                let mut addrs = self.empty();
                addrs.push(addr);
                addrs
            }
            None => self.lookup.resolve(uri, config, timeout)?,
        };
        check_resolved_addresses(host, &addrs, &self.allowed_hosts)
            .map_err(|err| ureq::Error::Other(Box::new(err)))?;
        Ok(addrs)
    }
}

impl TritonClient {
    /// A client for `endpoint`. The host's string check is the caller's
    /// ([`crate::TritonProvider`] does it before creating clients); the addresses it
    /// resolves to are checked against `allowed_hosts` (loopback always passes) before
    /// every connection. This opens no socket.
    #[must_use]
    pub fn new(
        endpoint: Endpoint,
        settings: ClientSettings,
        retry: RetryPolicy,
        allow_model_control: bool,
        allowed_hosts: &[String],
    ) -> Self {
        let config = ureq::Agent::config_builder()
            // Statuses are read, not turned into errors: 400 carries the server's message.
            .http_status_as_error(false)
            // Never through a proxy from the environment: the endpoint is what was allowed.
            .proxy(None)
            .max_redirects(0)
            .timeout_connect(Some(settings.connect_timeout))
            .timeout_global(Some(settings.request_timeout))
            .max_idle_connections_per_host(32)
            .user_agent(concat!("dp-provider-triton/", env!("CARGO_PKG_VERSION")))
            .build();
        Self {
            endpoint,
            agent: ureq::Agent::with_parts(
                config,
                DefaultConnector::new(),
                LiteralFirstResolver {
                    lookup: DefaultResolver::default(),
                    allowed_hosts: allowed_hosts.to_vec(),
                },
            ),
            settings,
            retry,
            allow_model_control,
        }
    }

    /// The endpoint.
    #[must_use]
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn unavailable(&self, cause: impl Into<String>) -> TritonError {
        TritonError::Unavailable {
            endpoint: self.endpoint.base().to_owned(),
            cause: cause.into(),
        }
    }

    /// One exchange, without retry. `Err((error, may_retry_stateless))`.
    fn exchange(
        &self,
        post: Option<(&[u8], Option<usize>)>,
        path: &str,
    ) -> Result<Reply, (TritonError, ErrorClass)> {
        let url = format!("{}{path}", self.endpoint.base());
        let result = match post {
            None => self.agent.get(&url).call(),
            Some((body, json_len)) => {
                let mut req = self.agent.post(&url);
                if let Some(n) = json_len {
                    req = req
                        .header(INFERENCE_HEADER, n.to_string())
                        .content_type("application/octet-stream");
                } else {
                    req = req.content_type("application/json");
                }
                req.send(body)
            }
        };
        let response = result.map_err(|e| self.transport_error(&e))?;
        let status = response.status().as_u16();
        let (parts, body) = response.into_parts();
        if let Some(len) = body
            .content_length()
            .filter(|&len| len > self.settings.max_response_bytes)
        {
            return Err((
                self.unavailable(format!(
                    "response of {len} bytes exceeds the {} byte cap",
                    self.settings.max_response_bytes
                )),
                ErrorClass::Other,
            ));
        }
        let body = body
            .into_with_config()
            .limit(self.settings.max_response_bytes)
            .read_to_vec()
            .map_err(|e| self.transport_error(&e))?;
        Ok(Reply {
            status,
            headers: parts.headers,
            body,
        })
    }

    fn transport_error(&self, err: &ureq::Error) -> (TritonError, ErrorClass) {
        // The resolver's refusal: no socket was opened, and no retry can change it.
        if let ureq::Error::Other(inner) = err
            && let Some(refused) = inner.downcast_ref::<TritonError>()
        {
            return (refused.clone(), ErrorClass::Other);
        }
        let class = match err {
            ureq::Error::Io(io) => match io.kind() {
                ErrorKind::ConnectionRefused
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof
                | ErrorKind::NotConnected => ErrorClass::Connection,
                _ => ErrorClass::Other,
            },
            ureq::Error::ConnectionFailed | ureq::Error::Protocol(_) => ErrorClass::Connection,
            ureq::Error::Timeout(_) => ErrorClass::Timeout,
            _ => ErrorClass::Other,
        };
        let cause = match err {
            ureq::Error::BodyExceedsLimit(n) => {
                format!("response larger than the {n} byte cap")
            }
            // ureq's own text ("timeout: global") names neither the limit nor the setting.
            ureq::Error::Timeout(ureq::Timeout::Connect) => format!(
                "no connection within {} ms (the spec's triton.connect_timeout_ms)",
                self.settings.connect_timeout.as_millis()
            ),
            ureq::Error::Timeout(_) => format!(
                "no complete reply within {} ms (the spec's triton.request_timeout_ms; raise \
                 it if the model is merely slow)",
                self.settings.request_timeout.as_millis()
            ),
            other => other.to_string(),
        };
        (self.unavailable(cause), class)
    }

    /// A call with the retry policy `idempotence` allows; 5xx statuses are errors.
    fn call(
        &self,
        post: Option<(&[u8], Option<usize>)>,
        path: &str,
        idempotence: Idempotence,
    ) -> Result<Reply, TritonError> {
        let mut backoff = self.retry.initial_backoff;
        let attempts = match idempotence {
            Idempotence::Once => 1,
            _ => self.retry.attempts.max(1),
        };
        let started = Instant::now();
        for attempt in 1..=attempts {
            let last = attempt == attempts;
            let retry = match self.exchange(post, path) {
                Ok(reply) if reply.status >= 500 => {
                    let err =
                        self.unavailable(format!("HTTP {}: {}", reply.status, reply.message()));
                    if last || idempotence != Idempotence::Idempotent {
                        return Err(err);
                    }
                    err
                }
                Ok(reply) => return Ok(reply),
                Err((err, class)) => {
                    let may = match idempotence {
                        Idempotence::Idempotent => class != ErrorClass::Other,
                        Idempotence::StatelessInference => class == ErrorClass::Connection,
                        Idempotence::Once => false,
                    };
                    if last || !may {
                        return Err(err);
                    }
                    err
                }
            };
            // Never wait past the request budget.
            if started.elapsed() + backoff >= self.settings.request_timeout {
                return Err(retry);
            }
            tracing::debug!(endpoint = self.endpoint.base(), path, attempt, error = %retry, "retrying");
            thread::sleep(backoff);
            backoff = (backoff * 2).min(self.retry.max_backoff);
        }
        Err(self.unavailable("no attempt was made"))
    }

    /// Parses a 200 reply as JSON.
    fn json<T: serde::de::DeserializeOwned>(&self, reply: &Reply) -> Result<T, TritonError> {
        serde_json::from_slice(&reply.body)
            .map_err(|e| self.unavailable(format!("unreadable response: {e}")))
    }

    fn model_error(&self, model: &str, version: Option<&str>, reply: &Reply) -> TritonError {
        TritonError::ModelNotFound {
            endpoint: self.endpoint.base().to_owned(),
            model: version.map_or_else(|| model.to_owned(), |v| format!("{model} version {v}")),
            message: format!("HTTP {}: {}", reply.status, reply.message()),
        }
    }

    /// `GET /v2/health/live`.
    ///
    /// # Errors
    /// [`TritonError::Unavailable`] when the server cannot be reached.
    pub fn server_live(&self) -> Result<bool, TritonError> {
        Ok(self
            .call(None, "/v2/health/live", Idempotence::Idempotent)?
            .status
            == 200)
    }

    /// `GET /v2/health/ready`.
    ///
    /// # Errors
    /// [`TritonError::Unavailable`] when the server cannot be reached.
    pub fn server_ready(&self) -> Result<bool, TritonError> {
        Ok(self
            .call(None, "/v2/health/ready", Idempotence::Idempotent)?
            .status
            == 200)
    }

    /// `GET /v2/models/<m>[/versions/<v>]/ready`.
    ///
    /// # Errors
    /// [`TritonError::Unavailable`] when the server cannot be reached.
    pub fn model_ready(&self, model: &str, version: Option<&str>) -> Result<bool, TritonError> {
        let path = format!("{}/ready", model_path(model, version));
        Ok(self.call(None, &path, Idempotence::Idempotent)?.status == 200)
    }

    /// `GET /v2/models/<m>[/versions/<v>]`.
    ///
    /// # Errors
    /// [`TritonError::ModelNotFound`] for an unknown or unready model, or unavailable.
    pub fn model_metadata(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<ModelMetadata, TritonError> {
        let reply = self.call(None, &model_path(model, version), Idempotence::Idempotent)?;
        if reply.status != 200 {
            return Err(self.model_error(model, version, &reply));
        }
        self.json(&reply)
    }

    /// `GET /v2/models/<m>[/versions/<v>]/config`, as JSON.
    ///
    /// # Errors
    /// [`TritonError::ModelNotFound`] for an unknown or unready model, or unavailable.
    pub fn model_config(&self, model: &str, version: Option<&str>) -> Result<Value, TritonError> {
        let path = format!("{}/config", model_path(model, version));
        let reply = self.call(None, &path, Idempotence::Idempotent)?;
        if reply.status != 200 {
            return Err(self.model_error(model, version, &reply));
        }
        self.json(&reply)
    }

    /// `POST /v2/repository/index` (read-only, so retried like a GET).
    ///
    /// # Errors
    /// [`TritonError::Unavailable`].
    pub fn repository_index(&self) -> Result<Vec<RepositoryEntry>, TritonError> {
        let reply = self.call(
            Some((b"{}", None)),
            "/v2/repository/index",
            Idempotence::Idempotent,
        )?;
        if reply.status != 200 {
            return Err(self.unavailable(format!("HTTP {}: {}", reply.status, reply.message())));
        }
        self.json(&reply)
    }

    fn control(&self, action: &'static str, model: &str) -> Result<(), TritonError> {
        if !self.allow_model_control {
            return Err(TritonError::ModelControlDisabled {
                endpoint: self.endpoint.base().to_owned(),
                action,
                model: model.to_owned(),
            });
        }
        let path = format!("/v2/repository/models/{}/{action}", segment(model));
        let reply = self.call(Some((b"{}", None)), &path, Idempotence::Once)?;
        match reply.status {
            200 => Ok(()),
            400 | 404 => Err(self.model_error(model, None, &reply)),
            _ => Err(self.unavailable(format!("HTTP {}: {}", reply.status, reply.message()))),
        }
    }

    /// `POST /v2/repository/models/<m>/load`; only when model control is allowed.
    ///
    /// # Errors
    /// [`TritonError::ModelControlDisabled`], [`TritonError::ModelNotFound`] when the
    /// repository has no such model or it fails to load, or unavailable.
    pub fn load_model(&self, model: &str) -> Result<(), TritonError> {
        self.control("load", model)
    }

    /// `POST /v2/repository/models/<m>/unload`; only when model control is allowed.
    ///
    /// # Errors
    /// As [`Self::load_model`].
    pub fn unload_model(&self, model: &str) -> Result<(), TritonError> {
        self.control("unload", model)
    }

    /// `POST /v2/models/<m>[/versions/<v>]/infer`.
    ///
    /// # Errors
    /// [`TritonError::InvalidInput`] for a 400 about the data (with the server's message),
    /// [`TritonError::ModelNotFound`] for an unknown or unready model, unavailable for
    /// transport failures, 5xx and malformed responses.
    pub fn infer(
        &self,
        model: &str,
        version: Option<&str>,
        inputs: &NamedTensors,
        outputs: &[OutputRequest],
        encoding: TensorEncoding,
        idempotence: Idempotence,
    ) -> Result<NamedTensors, TritonError> {
        let request = wire::encode_infer_request(inputs, outputs, encoding);
        let path = format!("{}/infer", model_path(model, version));
        let reply = self.call(Some((&request.body, request.json_len)), &path, idempotence)?;
        match reply.status {
            200 => wire::decode_infer_response(&reply.headers, &reply.body)
                .map_err(|e| self.unavailable(e.to_string())),
            404 => Err(self.model_error(model, version, &reply)),
            400 if means_model_missing(&reply.message()) => {
                Err(self.model_error(model, version, &reply))
            }
            400..=499 => Err(TritonError::InvalidInput {
                model: model.to_owned(),
                message: reply.message(),
            }),
            _ => Err(self.unavailable(format!("HTTP {}: {}", reply.status, reply.message()))),
        }
    }
}

/// What kind of transport failure happened, for the retry decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorClass {
    /// The connection was refused, reset or closed: the server did not answer.
    Connection,
    /// A timeout.
    Timeout,
    /// Anything else.
    Other,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literal_hosts_resolve_without_a_lookup() {
        let resolver = LiteralFirstResolver::default();
        let resolve = |uri: &str| resolve_with(&resolver, uri);
        assert_eq!(
            resolve("http://127.0.0.1:8000/v2").unwrap(),
            vec!["127.0.0.1:8000".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            resolve("http://[::1]:8001/v2").unwrap(),
            vec!["[::1]:8001".parse::<SocketAddr>().unwrap()]
        );
        // Names go to the default resolver (`localhost` resolves from /etc/hosts).
        let named = resolve("http://localhost:8002/v2").unwrap();
        assert!(
            !named.is_empty()
                && named
                    .iter()
                    .all(|a| a.ip().is_loopback() && a.port() == 8002)
        );
    }

    /// What `resolver` makes of `uri`: the addresses, or the refusal it carries.
    fn resolve_with(
        resolver: &LiteralFirstResolver,
        uri: &str,
    ) -> Result<Vec<SocketAddr>, TritonError> {
        let config = ureq::Agent::config_builder().build();
        match resolver.resolve(&uri.parse().unwrap(), &config, NextTimeout::default()) {
            Ok(addrs) => Ok(addrs.iter().copied().collect()),
            Err(ureq::Error::Other(inner)) => Err(inner
                .downcast_ref::<TritonError>()
                .expect("the resolver's own refusal")
                .clone()),
            Err(other) => panic!("{uri}: {other}"),
        }
    }

    fn allowing(hosts: &[&str]) -> LiteralFirstResolver {
        LiteralFirstResolver {
            lookup: DefaultResolver::default(),
            allowed_hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        }
    }

    #[test]
    fn the_resolver_dials_off_loopback_only_addresses_allowed_by_ip() {
        let loopback = allowing(&["127.0.0.1", "::1", "localhost"]);
        // A literal address off loopback: refused unless allowed as that address.
        let err = resolve_with(&loopback, "http://192.0.2.1:8000/v2").expect_err("refused");
        assert_eq!(
            err,
            TritonError::ResolvedNotAllowed {
                host: "192.0.2.1".into(),
                address: "192.0.2.1".into()
            }
        );
        assert_eq!(
            resolve_with(&allowing(&["192.0.2.1"]), "http://192.0.2.1:8000/v2"),
            Ok(vec!["192.0.2.1:8000".parse().unwrap()])
        );
        assert_eq!(
            resolve_with(
                &allowing(&["[2001:db8::1]"]),
                "http://[2001:db8::1]:8000/v2"
            ),
            Ok(vec!["[2001:db8::1]:8000".parse().unwrap()])
        );
        // Names go through the system resolver, then the same check: `3221225985` is
        // 192.0.2.1 to it (inet_aton's one-number form), a name leading off loopback with
        // no /etc/hosts edit. Allowing the name does not allow where it leads.
        let err = resolve_with(&allowing(&["3221225985"]), "http://3221225985:8000/v2")
            .expect_err("refused");
        assert_eq!(
            err,
            TritonError::ResolvedNotAllowed {
                host: "3221225985".into(),
                address: "192.0.2.1".into()
            }
        );
        assert_eq!(
            resolve_with(
                &allowing(&["3221225985", "192.0.2.1"]),
                "http://3221225985:8000/v2"
            ),
            Ok(vec!["192.0.2.1:8000".parse().unwrap()])
        );
    }

    #[test]
    fn a_refused_address_is_never_dialed_nor_retried() {
        // The name is allowed, the address it resolves to (192.0.2.1) is not: the refusal
        // must come before any socket, and no retry may follow it.
        let client = TritonClient::new(
            Endpoint::parse("http://3221225985:8000").unwrap(),
            ClientSettings {
                connect_timeout: Duration::from_secs(5),
                request_timeout: Duration::from_secs(5),
                max_response_bytes: 1 << 20,
                retry: RetryPolicy::default().into(),
            },
            RetryPolicy::default(),
            false,
            &["3221225985".to_owned()],
        );
        let started = Instant::now();
        let err = client.server_live().expect_err("refused");
        // 192.0.2.1 (TEST-NET-1) never answers: a dial would wait for the 5 s timeout.
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        let err = dp_spec::ModelError::from(err);
        assert_eq!(err.error_code, dp_spec::ErrorCode::NetworkForbidden);
        assert_eq!(err.details["address"], "192.0.2.1");
    }

    #[test]
    fn paths_encode_names() {
        assert_eq!(model_path("affine", None), "/v2/models/affine");
        assert_eq!(
            model_path("a b/c", Some("2")),
            "/v2/models/a%20b%2Fc/versions/2"
        );
    }

    #[test]
    fn model_missing_messages_are_recognised() {
        assert!(means_model_missing(
            "Request for unknown model: 'x' is not found"
        ));
        assert!(means_model_missing("Model version not ready"));
        assert!(!means_model_missing(
            "unexpected shape for input 'x', model expects [-1,4]"
        ));
    }
}

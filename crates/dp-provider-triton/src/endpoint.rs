//! Endpoint URLs: parsing the host out of a base URL and checking it against the allowed
//! hosts before any socket is opened, then checking the addresses it resolves to before
//! each connection.

use std::net::SocketAddr;

use crate::error::TritonError;

/// A parsed `http://host:port` base URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The base URL without a trailing slash, e.g. `http://127.0.0.1:8000`.
    base: String,
    /// The host, lowercase, without IPv6 brackets.
    host: String,
}

impl Endpoint {
    /// Parses a base URL of the form the spec schema allows (`http(s)://authority[/]`).
    ///
    /// ```
    /// let e = dp_provider_triton::Endpoint::parse("http://[::1]:8000/")?;
    /// assert_eq!(e.host(), "::1");
    /// assert_eq!(e.base(), "http://[::1]:8000");
    /// # Ok::<(), dp_provider_triton::TritonError>(())
    /// ```
    ///
    /// # Errors
    /// [`TritonError::BadEndpoint`] when the URL has another scheme than `http` (no TLS stack is built in), a path, user info or no
    /// host.
    pub fn parse(url: &str) -> Result<Self, TritonError> {
        let bad = |reason: &str| TritonError::BadEndpoint {
            endpoint: url.to_owned(),
            reason: reason.to_owned(),
        };
        if url.starts_with("https://") {
            // ureq is built without a TLS stack: accepting https here would only fail later,
            // at the first request, with a less clear error.
            return Err(bad(
                "https is not supported (this build has no TLS stack); reach Triton over \
                 http:// on loopback, or through a local TLS-terminating proxy",
            ));
        }
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("the scheme must be http://"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        if authority
            .bytes()
            .any(|b| matches!(b, b'/' | b'?' | b'#' | b'@') || b.is_ascii_whitespace())
        {
            return Err(bad(
                "only scheme, host and port are allowed (no path, query or user info)",
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err(bad("garbage after the IPv6 address")),
            }
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if port.is_some_and(|p| p.parse::<u16>().is_err()) {
            return Err(bad("the port must be a number from 0 to 65535"));
        }
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Self {
            base: format!("{}{authority}", &url[..url.len() - rest.len()]),
            host: host.to_ascii_lowercase(),
        })
    }

    /// The base URL, without a trailing slash.
    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The host, lowercase, without IPv6 brackets.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Fails unless the host is one of `allowed` (compared case-insensitively, brackets
    /// ignored). This is a pure string check: it runs before any name resolution or socket.
    /// A name passing it is not trusted yet: the addresses it resolves to are checked before
    /// each connection ([`check_resolved_addresses`]).
    ///
    /// # Errors
    /// [`TritonError::HostNotAllowed`].
    pub fn check_allowed(&self, allowed: &[String]) -> Result<(), TritonError> {
        let ok = allowed.iter().any(|a| {
            let a = a.trim_start_matches('[').trim_end_matches(']');
            a.eq_ignore_ascii_case(&self.host)
        });
        if ok {
            Ok(())
        } else {
            Err(TritonError::HostNotAllowed {
                endpoint: self.base.clone(),
                host: self.host.clone(),
            })
        }
    }
}

/// Fails unless every address `host` resolved to is loopback or, written as an IP address,
/// one of `allowed`: a name is proof of nothing (`/etc/hosts` or DNS can map `localhost`
/// anywhere), so the connection is judged by where it would go. IPv4-mapped IPv6
/// addresses are compared as the IPv4 address they carry. This is a pure function of its
/// arguments; the provider's resolver calls it on every lookup, before any socket opens.
///
/// ```
/// use dp_provider_triton::check_resolved_addresses;
/// let allowed = ["localhost".to_owned(), "10.0.0.5".to_owned()];
/// let to = |a: &str| [a.parse().unwrap()];
/// assert!(check_resolved_addresses("localhost", &to("127.0.0.1:8000"), &allowed).is_ok());
/// assert!(check_resolved_addresses("triton", &to("10.0.0.5:8000"), &allowed).is_ok());
/// assert!(check_resolved_addresses("localhost", &to("10.0.0.9:8000"), &allowed).is_err());
/// ```
///
/// # Errors
/// [`TritonError::ResolvedNotAllowed`], naming `host` and the first address refused.
pub fn check_resolved_addresses(
    host: &str,
    addresses: &[SocketAddr],
    allowed: &[String],
) -> Result<(), TritonError> {
    match dp_spec::off_limits_address(addresses.iter().map(SocketAddr::ip), allowed) {
        None => Ok(()),
        Some(address) => Err(TritonError::ResolvedNotAllowed {
            host: host.to_owned(),
            address: address.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_and_ports() {
        for (url, host, base) in [
            (
                "http://127.0.0.1:8000",
                "127.0.0.1",
                "http://127.0.0.1:8000",
            ),
            ("http://LocalHost:1/", "localhost", "http://LocalHost:1"),
            ("http://[::1]:8000/", "::1", "http://[::1]:8000"),
        ] {
            let e = Endpoint::parse(url).expect(url);
            assert_eq!(e.host(), host, "{url}");
            assert_eq!(e.base(), base, "{url}");
        }
    }

    #[test]
    fn rejects_malformed_urls() {
        for url in [
            "ftp://x",
            "https://example.com",
            "http://",
            "http://a/b",
            "http://u@h:1",
            "http://h:port",
            "http://h:99999",
            "http://[::1",
            "127.0.0.1:8000",
        ] {
            assert!(
                matches!(Endpoint::parse(url), Err(TritonError::BadEndpoint { .. })),
                "{url}"
            );
        }
    }

    #[test]
    fn allow_list_is_exact_and_case_insensitive() {
        let allowed = crate::TritonProviderConfig::default().allowed_hosts;
        for ok in ["http://127.0.0.1:1", "http://[::1]:1", "http://LOCALHOST:1"] {
            Endpoint::parse(ok)
                .expect(ok)
                .check_allowed(&allowed)
                .expect(ok);
        }
        for no in [
            "http://10.0.0.1:1",
            "http://127.0.0.1.nip.io:1",
            "http://example.com",
        ] {
            let err = Endpoint::parse(no).expect(no).check_allowed(&allowed);
            assert!(
                matches!(err, Err(TritonError::HostNotAllowed { .. })),
                "{no}"
            );
        }
    }

    fn addresses(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().expect(a)).collect()
    }

    #[test]
    fn localhost_resolving_off_loopback_is_refused() {
        let allowed = crate::TritonProviderConfig::default().allowed_hosts;
        // `/etc/hosts` mapping localhost elsewhere: the name is allowed, the address is not.
        for resolved in [
            &["10.1.2.3:8000"][..],
            &["127.0.0.1:8000", "10.1.2.3:8000"],
            &["[::1]:8000", "[2001:db8::1]:8000"],
            &["[::ffff:10.1.2.3]:8000"],
            &["0.0.0.0:8000"],
        ] {
            let err = check_resolved_addresses("localhost", &addresses(resolved), &allowed)
                .expect_err("refused");
            let TritonError::ResolvedNotAllowed { host, address } = &err else {
                panic!("{err:?}");
            };
            assert_eq!(host, "localhost");
            assert!(
                resolved.iter().any(|r| r.contains(address.as_str())),
                "{address} is one of {resolved:?}"
            );
            let err = dp_spec::ModelError::from(err);
            assert_eq!(err.error_code, dp_spec::ErrorCode::NetworkForbidden);
            assert!(
                err.message.contains("\"localhost\" resolved to"),
                "{}",
                err.message
            );
            assert!(err.message.contains("allowed_hosts"), "{}", err.message);
        }
        for resolved in [
            &["127.0.0.1:8000"][..],
            &["[::1]:8000", "127.0.0.1:8000"],
            &["127.0.1.1:8000"],
            &["[::ffff:127.0.0.1]:8000"],
        ] {
            check_resolved_addresses("localhost", &addresses(resolved), &allowed)
                .expect("loopback");
        }
    }

    #[test]
    fn off_loopback_addresses_pass_only_when_allowed_by_ip() {
        let allowed = vec![
            "triton.internal".to_owned(),
            "[2001:db8::7]".to_owned(),
            "10.0.0.5".to_owned(),
        ];
        for ok in ["10.0.0.5:1", "[2001:db8::7]:1", "[::ffff:10.0.0.5]:1"] {
            check_resolved_addresses("triton.internal", &addresses(&[ok]), &allowed).expect(ok);
        }
        // Allowing a name does not allow what it resolves to.
        let err =
            check_resolved_addresses("triton.internal", &addresses(&["10.0.0.6:1"]), &allowed)
                .expect_err("not allowed by IP");
        assert!(err.to_string().contains("10.0.0.6"), "{err}");
    }
}

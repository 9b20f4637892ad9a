//! Resolving who is asking: the client's address for logs and the sign-in limiter.
//!
//! By default it is the TCP peer: `X-Forwarded-For` and `Forwarded` are headers any client can
//! send. Behind a reverse proxy (`--trust-forwarded`) the peer is the proxy, and the client is
//! the address the proxy reports: the *last* entry of those headers, the one the proxy itself
//! appended (earlier entries came from the client and may be made up).

use std::net::{IpAddr, SocketAddr};

use actix_web::HttpRequest;
use actix_web::http::header::{self, HeaderMap, HeaderName};

/// `--trust-forwarded`, registered as app data: whether [`resolve`] believes the proxy.
#[derive(Debug, Clone, Copy)]
pub struct TrustForwarded(pub bool);

/// The client's address as the app's [`TrustForwarded`] says to take it (the peer when none is
/// registered); `None` when there is none at all (a test request without a peer).
pub fn resolve(req: &HttpRequest) -> Option<IpAddr> {
    let trust = req.app_data::<TrustForwarded>().is_some_and(|t| t.0);
    resolve_trusting(req, trust)
}

fn resolve_trusting(req: &HttpRequest, trust_forwarded: bool) -> Option<IpAddr> {
    resolve_from(req.peer_addr(), req.headers(), trust_forwarded)
}

/// [`resolve`] from a request's parts, where there is no app to ask (a WebSocket upgrade):
/// its peer, its headers and whether to believe the proxy.
pub fn resolve_from(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    trust_forwarded: bool,
) -> Option<IpAddr> {
    let peer = peer.map(|a| a.ip());
    if !trust_forwarded {
        return peer;
    }
    forwarded_for(headers)
        .or_else(|| {
            last_entry(headers, &HeaderName::from_static("x-forwarded-for")).and_then(parse_node)
        })
        .or(peer)
}

/// `Forwarded: for=192.0.2.60;proto=https, for="[2001:db8::17]:4711"` → the last `for`.
fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let last = last_entry(headers, &header::FORWARDED)?;
    last.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_node(value.trim().trim_matches('"')))
            .flatten()
    })
}

/// The last comma-separated entry over every line of header `name`.
fn last_entry<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers
        .get_all(name)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .last()
}

/// `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1` or `[2001:db8::1]:8080`.
fn parse_node(node: &str) -> Option<IpAddr> {
    node.parse::<IpAddr>()
        .ok()
        .or_else(|| node.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            node.strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .and_then(|n| n.parse().ok())
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn request(headers: &[(&str, &str)]) -> HttpRequest {
        let mut req = TestRequest::default().peer_addr("198.51.100.7:40000".parse().unwrap());
        for (name, value) in headers {
            req = req.append_header((*name, *value));
        }
        req.to_http_request()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn forwarded_headers_are_ignored_unless_trusted() {
        let req = request(&[
            ("X-Forwarded-For", "203.0.113.9"),
            ("Forwarded", "for=203.0.113.10"),
        ]);
        assert_eq!(resolve_trusting(&req, false), ip("198.51.100.7"));
    }

    #[test]
    fn trusted_the_entry_the_proxy_appended_counts() {
        let cases = [
            (vec![("X-Forwarded-For", "203.0.113.9")], "203.0.113.9"),
            (
                vec![("X-Forwarded-For", "10.0.0.1, 203.0.113.9")],
                "203.0.113.9",
            ),
            (
                vec![
                    ("X-Forwarded-For", "10.0.0.1"),
                    ("X-Forwarded-For", "203.0.113.9:5555"),
                ],
                "203.0.113.9",
            ),
            (
                vec![(
                    "Forwarded",
                    r#"for=10.0.0.1, for="[2001:db8::17]:4711";proto=https"#,
                )],
                "2001:db8::17",
            ),
            (
                vec![
                    ("Forwarded", "For=203.0.113.10"),
                    ("X-Forwarded-For", "203.0.113.9"),
                ],
                "203.0.113.10",
            ),
            // Nothing usable: the peer.
            (vec![("X-Forwarded-For", "unknown")], "198.51.100.7"),
            (vec![("Forwarded", "for=_hidden")], "198.51.100.7"),
            (vec![], "198.51.100.7"),
        ];
        for (headers, want) in cases {
            assert_eq!(
                resolve_trusting(&request(&headers), true),
                ip(want),
                "{headers:?}"
            );
        }
    }
}

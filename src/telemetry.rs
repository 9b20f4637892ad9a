//! Logs and metrics: the tracing subscriber (compact text, or JSON lines with
//! `CANDLEWICK_LOG_FORMAT=json`; filtered by `RUST_LOG`, default `info`), the span each request
//! runs in, and the process-wide Prometheus recorder behind `/metrics`.

use std::io::IsTerminal;

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Uri;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::Span;
use tracing_actix_web::{RequestId, RootSpanBuilder, TracingLogger};
use tracing_subscriber::EnvFilter;

use crate::error::{AppError, PageError};

pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,actix_server=warn,actix_web=warn"));
    let json = std::env::var("CANDLEWICK_LOG_FORMAT").as_deref() == Ok("json");
    let ansi = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let result = if json {
        builder.json().try_init()
    } else {
        builder.compact().try_init()
    };
    // A second init (tests) keeps the first subscriber.
    drop(result);
}

/// The process-wide Prometheus recorder (installed once, also when tests build many apps).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .install_recorder()
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle());
            metrics::describe_counter!(
                "candlewick_ticks_inserted_total",
                "Ticks written through candlewick"
            );
            metrics::describe_histogram!(
                "candlewick_poll_seconds",
                "Duration of one poll of the change journal"
            );
            metrics::describe_gauge!("candlewick_viewers", "Connected chart viewers");
            metrics::describe_gauge!("candlewick_ready", "1 while the last poll succeeded");
            metrics::gauge!("candlewick_ready").set(0.0);
            handle
        })
        .clone()
}

/// The request logger: [`RequestSpan`] for every request.
pub fn request_logger() -> TracingLogger<RequestSpan> {
    TracingLogger::new()
}

/// The span of one request, as tracing-actix-web's default one but: the client address is the
/// TCP peer unless `--trust-forwarded` (see `client_addr`), secrets in the query string are
/// redacted, and an error response is logged at the level its status deserves — a redirect to
/// the sign-in page is how the admin pages work, not an error.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(req: &ServiceRequest) -> Span {
        let client = crate::client_addr::resolve(req.request())
            .map_or_else(|| "-".to_owned(), |ip| ip.to_string());
        let route = req.match_pattern().unwrap_or_else(|| "default".into());
        let user_agent = req
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .map(ToString::to_string)
            .unwrap_or_default();
        tracing::info_span!(
            "HTTP request",
            http.method = %req.method(),
            http.route = %route,
            http.client_ip = %client,
            http.target = %redacted_target(req.uri()),
            http.user_agent = %user_agent,
            http.status_code = tracing::field::Empty,
            request_id = %request_id,
            exception.message = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(
        span: Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        let (status, error) = match outcome {
            Ok(res) => (res.status(), res.response().error()),
            Err(e) => (e.as_response_error().status_code(), Some(e)),
        };
        span.record("http.status_code", status.as_u16());
        let Some(error) = error else {
            return;
        };
        let message = error.to_string();
        span.record("exception.message", message.as_str());
        let _entered = span.enter();
        if status.is_server_error() {
            // The one place a failure is logged; its cause chain never reaches the client.
            let cause = error
                .as_error::<AppError>()
                .or_else(|| error.as_error::<PageError>().map(|e| &e.0))
                .and_then(AppError::cause);
            match cause {
                Some(cause) => tracing::error!(
                    status = status.as_u16(),
                    error.cause_chain = ?cause,
                    "request failed: {message}"
                ),
                None => tracing::error!(status = status.as_u16(), "request failed: {message}"),
            }
        } else if status.is_client_error() {
            tracing::warn!(status = status.as_u16(), "request refused: {message}");
        } else {
            tracing::debug!(status = status.as_u16(), "request redirected: {message}");
        }
    }
}

/// Query parameters whose values are secrets (names compared case-insensitively).
fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    const PARTS: [&str; 9] = [
        "token",
        "secret",
        "passw",
        "apikey",
        "api_key",
        "api-key",
        "auth",
        "credential",
        "signature",
    ];
    PARTS.iter().any(|p| name.contains(p))
        || name.ends_with("key")
        || matches!(name.as_str(), "pwd" | "pass" | "sig" | "jwt" | "session")
}

/// The request's path and query, with the value of every secret-looking query parameter
/// replaced: a token pasted into a URL by mistake must not land in the logs.
pub fn redacted_target(uri: &Uri) -> String {
    let path = uri.path();
    let Some(query) = uri.query() else {
        return path.to_owned();
    };
    let query = query
        .split('&')
        .map(|pair| {
            let (name, _) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded: String = url::form_urlencoded::parse(name.as_bytes())
                .next()
                .map(|(n, _)| n.into_owned())
                .unwrap_or_default();
            if is_secret_name(&decoded) {
                format!("{name}=[redacted]")
            } else {
                pair.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{path}?{query}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use actix_web::test::{self as actix_test, TestRequest};
    use actix_web::{App, HttpResponse, web};

    use super::*;

    #[test]
    fn secrets_in_the_query_string_are_redacted() {
        let cases = [
            (
                "/api/ticks?token=s3cret&symbol=A",
                "/api/ticks?token=[redacted]&symbol=A",
            ),
            (
                "/admin?ACCESS_TOKEN=s3cret",
                "/admin?ACCESS_TOKEN=[redacted]",
            ),
            (
                "/x?api_key=1&apiKey=2&key=3",
                "/x?api_key=[redacted]&apiKey=[redacted]&key=[redacted]",
            ),
            (
                "/x?Password=1&client_secret=2",
                "/x?Password=[redacted]&client_secret=[redacted]",
            ),
            ("/x?%74oken=s3cret", "/x?%74oken=[redacted]"),
            ("/x?token", "/x?token=[redacted]"),
            (
                "/api/candles?symbol=BTC/USD&from=2024-07-03T00:00:00Z",
                "/api/candles?symbol=BTC/USD&from=2024-07-03T00:00:00Z",
            ),
            ("/healthz", "/healthz"),
        ];
        for (target, want) in cases {
            let uri: Uri = target.parse().unwrap();
            assert_eq!(redacted_target(&uri), want, "{target}");
        }
    }

    /// Everything logged while `f` runs on this thread, as the compact text format writes it.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Sends `req` through an app logging with [`request_logger`] (its handler answers as the
    /// admin pages do without a session) and returns the log text.
    async fn log_of(trust_forwarded: bool, req: TestRequest) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = actix_test::init_service(
            App::new()
                .wrap(request_logger())
                .app_data(crate::client_addr::TrustForwarded(trust_forwarded))
                .route(
                    "/admin",
                    web::get().to(|| async {
                        Err::<HttpResponse, _>(crate::error::PageError(AppError::SignInRequired {
                            expired: false,
                        }))
                    }),
                )
                .route(
                    "/boom",
                    web::get().to(|| async {
                        Err::<HttpResponse, _>(crate::error::AppError::Unexpected(anyhow::anyhow!(
                            "the disk is on fire"
                        )))
                    }),
                ),
        )
        .await;
        let res = actix_test::call_service(&app, req.to_request()).await;
        drop(res);
        drop(app);
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    #[actix_web::test]
    async fn an_admin_page_without_a_session_is_a_redirect_not_an_error_in_the_log() {
        let log = log_of(false, TestRequest::get().uri("/admin")).await;
        assert!(log.contains("http.status_code=303"), "{log}");
        assert!(!log.contains("ERROR"), "{log}");
        let log = log_of(false, TestRequest::get().uri("/boom")).await;
        assert!(log.contains("ERROR"), "a real failure still is: {log}");
    }

    #[actix_web::test]
    async fn a_failure_is_logged_once_with_its_cause_chain() {
        let log = log_of(false, TestRequest::get().uri("/boom")).await;
        let errors: Vec<_> = log.lines().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(errors.len(), 1, "{log}");
        assert!(errors[0].contains("the disk is on fire"), "{log}");
        assert!(
            errors[0].contains("http.target=/boom"),
            "in the request's span: {log}"
        );
    }

    #[actix_web::test]
    async fn the_logged_client_is_the_peer_and_query_secrets_are_redacted() {
        let log = log_of(
            false,
            TestRequest::get()
                .uri("/admin?token=s3cret-admin-token")
                .peer_addr("198.51.100.7:40000".parse().unwrap())
                .insert_header(("X-Forwarded-For", "203.0.113.9")),
        )
        .await;
        assert!(log.contains("http.client_ip=198.51.100.7"), "{log}");
        assert!(!log.contains("203.0.113.9"), "{log}");
        assert!(!log.contains("s3cret-admin-token"), "{log}");
        assert!(log.contains("token=[redacted]"), "{log}");
    }

    #[actix_web::test]
    async fn behind_a_trusted_proxy_the_logged_client_is_the_forwarded_one() {
        let log = log_of(
            true,
            TestRequest::get()
                .uri("/admin")
                .peer_addr("198.51.100.7:40000".parse().unwrap())
                .insert_header(("X-Forwarded-For", "203.0.113.9")),
        )
        .await;
        assert!(log.contains("http.client_ip=203.0.113.9"), "{log}");
    }
}

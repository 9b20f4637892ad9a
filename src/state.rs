//! What every handler can reach: `web::Data<AppState>`.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::AllowedOrigins;
use crate::domain::Symbol;
use crate::feed::Feed;
use crate::feed::health::Health;

/// Shared by every handler (cheap to clone: handles and `Arc`s).
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// For the API's reads: statements time out (`--api-read-timeout`, see `db::read_pool`).
    pub read_pool: PgPool,
    pub default_symbol: Symbol,
    pub feed: Feed,
    pub health: Arc<Health>,
    pub metrics: PrometheusHandle,
    pub secure_cookies: bool,
    /// Browser origins besides our own that may open `/ws`.
    pub allowed_origins: Arc<AllowedOrigins>,
    /// Cancelled when the server stops: long-lived sessions end themselves.
    pub shutdown: CancellationToken,
}

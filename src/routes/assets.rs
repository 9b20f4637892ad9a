//! Static files embedded in the binary: our own `static/` and the chart library from npm.

use std::borrow::Cow;
use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use rust_embed::RustEmbed;

use crate::error::{AppError, PageError};

#[derive(RustEmbed)]
#[folder = "static/"]
struct StaticFiles;

/// The chart library, installed from package-lock.json under `OUT_DIR` by `build.rs`, which
/// names the file. `include_bytes!` rather than a second `RustEmbed`: the package's `dist/`
/// holds 3 MB of other builds we do not serve.
const CHART_LIBRARY: &[u8] = include_bytes!(env!("CANDLEWICK_CHART_LIBRARY"));

/// The `<style>` the library injects for its attribution logo is blocked by `style-src 'self'`
/// (a console error, and the logo loses its place), so the policy's `style-src` must list this
/// hash of exactly that text. The test below notices when an upgrade changes it; recompute with
/// `printf %s "$LOGO_STYLE" | openssl dgst -sha256 -binary | base64`.
pub const LIBRARY_STYLE_HASH: &str = "'sha256-3pRED1tOXas1FXFoPb9TGCjmYe9XQsmO9OV23khV2nY='";

/// Our files change with each release, so browsers revalidate (cheap with the ETag); the
/// library changes only with package-lock.json.
const OWN_CACHE: &str = "no-cache";
const LIBRARY_CACHE: &str = "public, max-age=3600";

pub fn configure(cfg: &mut web::ServiceConfig) {
    // The library's route comes first: `{path:.*}` would match it too.
    cfg.service(
        web::resource("/static/vendor/lightweight-charts.js")
            .route(web::get().to(serve_chart_library))
            .route(web::head().to(serve_chart_library)),
    )
    .service(
        web::resource("/static/{path:.*}")
            .route(web::get().to(serve_static))
            .route(web::head().to(serve_static)),
    );
}

async fn serve_static(
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let path = path.into_inner();
    let file =
        StaticFiles::get(&path).ok_or_else(|| AppError::NotFound("no such static file".into()))?;
    let etag = format!("W/\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
    let content_type = content_type(&path, file.metadata.mimetype());
    Ok(respond(&req, file.data, &content_type, &etag, OWN_CACHE))
}

async fn serve_chart_library(req: HttpRequest) -> HttpResponse {
    static ETAG: OnceLock<String> = OnceLock::new();
    let etag = ETAG.get_or_init(|| format!("W/\"{:016x}\"", fnv1a(CHART_LIBRARY)));
    let content_type = content_type("lightweight-charts.js", "");
    respond(
        &req,
        Cow::Borrowed(CHART_LIBRARY),
        &content_type,
        etag,
        LIBRARY_CACHE,
    )
}

fn respond(
    req: &HttpRequest,
    data: Cow<'static, [u8]>,
    content_type: &str,
    etag: &str,
    cache: &str,
) -> HttpResponse {
    if if_none_match(req, etag) {
        return HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .insert_header((header::CACHE_CONTROL, cache))
            .finish();
    }
    let body = match data {
        Cow::Borrowed(b) => Bytes::from_static(b),
        Cow::Owned(v) => Bytes::from(v),
    };
    HttpResponse::Ok()
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::CONTENT_TYPE, content_type))
        .body(body)
}

/// Weak comparison (RFC 9110 §13.1.2): our ETags are weak because the Compress middleware may
/// serve the same content gzip-encoded.
fn if_none_match(req: &HttpRequest, etag: &str) -> bool {
    let etag = etag.trim_start_matches("W/");
    req.headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == etag || t == "*")
        })
}

/// Text types get an explicit charset; `.js` is always `text/javascript` (RFC 9239), whatever
/// the guess, because module scripts are refused under any non-JavaScript type.
fn content_type(path: &str, guessed: &str) -> String {
    let mime = if path.ends_with(".js") || path.ends_with(".mjs") {
        "text/javascript"
    } else if guessed.is_empty() {
        "application/octet-stream"
    } else {
        guessed
    };
    if mime.starts_with("text/") || mime == "application/json" || mime == "image/svg+xml" {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stable content hash for the ETag (std's hashers may change between Rust releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_and_styles_are_served_as_utf8_text() {
        assert_eq!(
            content_type("chart.js", "application/javascript"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            content_type("chart.css", "text/css"),
            "text/css; charset=utf-8"
        );
        assert_eq!(content_type("logo.png", "image/png"), "image/png");
    }

    #[actix_web::test]
    async fn a_revalidation_with_the_current_etag_gets_304() {
        let first =
            serve_chart_library(actix_web::test::TestRequest::get().to_http_request()).await;
        let etag = first.headers().get(header::ETAG).expect("an ETag").clone();
        let req = actix_web::test::TestRequest::get()
            .insert_header((header::IF_NONE_MATCH, etag))
            .to_http_request();
        let again = serve_chart_library(req).await;
        assert_eq!(again.status(), actix_web::http::StatusCode::NOT_MODIFIED);
    }

    #[test]
    fn the_page_assets_are_embedded() {
        for path in [
            "chart.js",
            "theme.js",
            "indicators.js",
            "chart.css",
            "favicon.svg",
        ] {
            assert!(StaticFiles::get(path).is_some(), "static/{path} is missing");
        }
    }

    #[test]
    fn the_library_still_injects_the_style_whose_hash_the_csp_allows() {
        const LOGO_STYLE: &str = "a#tv-attr-logo{--fill:#131722;--stroke:#fff;position:absolute;left:10px;\
            bottom:10px;height:19px;width:35px;margin:0;padding:0;border:0;z-index:3;}\
            a#tv-attr-logo[data-dark]{--fill:#D1D4DC;--stroke:#131722;}";
        let library = std::str::from_utf8(CHART_LIBRARY).expect("the library is UTF-8");
        assert!(
            library.contains(&format!("innerText=\"{LOGO_STYLE}\"")),
            "lightweight-charts changed its logo style; update LOGO_STYLE and LIBRARY_STYLE_HASH"
        );
    }
}

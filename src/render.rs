//! Renders askama templates into responses (askama_actix is deprecated).

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use anyhow::Context;

use crate::error::AppError;

/// 200 with the rendered page.
pub fn render<T: askama::Template>(page: &T) -> Result<HttpResponse, AppError> {
    render_with(StatusCode::OK, page)
}

/// The rendered page with `status` (e.g. 422 for a form re-shown with its errors).
pub fn render_with<T: askama::Template>(
    status: StatusCode,
    page: &T,
) -> Result<HttpResponse, AppError> {
    let body = page.render().context("rendering a page")?;
    Ok(HttpResponse::build(status)
        .insert_header(ContentType::html())
        .body(body))
}

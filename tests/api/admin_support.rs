//! Helpers for the admin page tests: signing in, scraping CSRF tokens, posting forms.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test
#![allow(dead_code)] // each admin test module uses its own subset

use actix_web::cookie::{Cookie, CookieJar};
use candlewick::auth::Auth;
use candlewick::routes::admin::SESSION_COOKIE;

use crate::helpers::{TOKEN, TestApp};

/// A client of its own (no redirects, own cookie store), e.g. a second browser.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .expect("building an HTTP client")
}

/// Signs `client` in with the admin token; asserts the 303 to the list.
pub async fn sign_in(app: &TestApp, client: &reqwest::Client) {
    let r = client
        .post(app.url("/admin/sign-in"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .expect("POST sign-in");
    assert_eq!(r.status(), 303, "signing in with the right token");
    assert_eq!(location(&r), "/admin");
}

/// Signs in with a client that keeps no cookies and returns the session cookie (`name=value`),
/// as a browser would have saved it.
pub async fn saved_session_cookie(app: &TestApp) -> String {
    let r = post_form(app, &plain_client(), "/admin/sign-in", &[("token", TOKEN)]).await;
    assert_eq!(r.status(), 303, "signing in");
    let cookie = set_cookie(&r);
    cookie
        .split(';')
        .next()
        .filter(|c| c.starts_with("candlewick_admin="))
        .unwrap_or_else(|| panic!("a session cookie: {cookie}"))
        .to_owned()
}

pub fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `app.client`, signed in.
pub async fn admin(app: &TestApp) -> &reqwest::Client {
    sign_in(app, &app.client).await;
    &app.client
}

/// The response's `Set-Cookie` header ("" when there is none).
pub fn set_cookie(r: &reqwest::Response) -> String {
    r.headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

pub fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// GET `path`; asserts `status`; returns the body.
pub async fn page(app: &TestApp, client: &reqwest::Client, path: &str, status: u16) -> String {
    let r = client
        .get(app.url(path))
        .send()
        .await
        .expect("GET admin page");
    assert_eq!(r.status(), status, "GET {path}");
    r.text().await.expect("page body")
}

/// The CSRF token in a page's forms.
pub fn csrf_of(html: &str) -> String {
    let marker = r#"name="csrf_token" value=""#;
    let start = html
        .find(marker)
        .map(|i| i + marker.len())
        .expect("a csrf_token field on the page");
    let end = html[start..]
        .find('"')
        .expect("the end of the csrf_token value");
    html[start..start + end].to_owned()
}

/// The session's CSRF token (read from the new-tick form).
pub async fn csrf(app: &TestApp, client: &reqwest::Client) -> String {
    csrf_of(&page(app, client, "/admin/ticks/new", 200).await)
}

pub async fn post_form(
    app: &TestApp,
    client: &reqwest::Client,
    path: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    client
        .post(app.url(path))
        .form(fields)
        .send()
        .await
        .expect("POST admin form")
}

/// A session cookie as the server would have issued it for the sign-in `session_id`, with
/// chosen timestamps: the timestamps live only in the encrypted cookie, so this is how a test
/// makes one old.
pub fn crafted_session_cookie(
    session_id: &str,
    signed_in_at: i64,
    last_seen: i64,
    csrf: &str,
) -> String {
    let key = Auth::new(TOKEN.to_owned().into()).cookie_key();
    let state = serde_json::json!({
        "session_id": serde_json::to_string(session_id).expect("JSON"),
        "signed_in_at": signed_in_at.to_string(),
        "last_seen": last_seen.to_string(),
        "csrf": serde_json::to_string(csrf).expect("JSON"),
    });
    let mut jar = CookieJar::new();
    jar.private_mut(&key)
        .add(Cookie::new(SESSION_COOKIE, state.to_string()));
    let sealed = jar
        .get(SESSION_COOKIE)
        .expect("the sealed cookie")
        .value()
        .to_owned();
    format!("{SESSION_COOKIE}={sealed}")
}

/// A `multipart/form-data` body with the fields in the given order; `(name, filename, bytes)`.
pub fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "----candlewick-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, filename, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: text/csv\r\n\r\n")
                    .as_bytes(),
            ),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Rows of `audit_log` as `actor|action|symbol|rows`, oldest first.
pub fn audit_rows(app: &TestApp) -> Vec<String> {
    app.psql("SELECT actor || '|' || action || '|' || coalesce(symbol, '') || '|' || rows FROM audit_log ORDER BY id")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Undoes HTML escaping of the characters templates escape (for reading values back).
pub fn unescape(html: &str) -> String {
    html.replace("&#60;", "<")
        .replace("&lt;", "<")
        .replace("&#62;", ">")
        .replace("&gt;", ">")
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

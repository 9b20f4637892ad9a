//! Admin sign-in, sign-out, session expiry, rate limiting and the headers on admin pages.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use candlewick::routes::admin::{SESSION_IDLE_SECS, SESSION_MAX_AGE_SECS};

use crate::admin_support::{
    browser, crafted_session_cookie, csrf, location, page, plain_client, post_form,
    saved_session_cookie, set_cookie, sign_in,
};
use crate::helpers::{TOKEN, spawn_app, spawn_app_with};

#[actix_web::test]
async fn without_a_session_admin_pages_redirect_to_the_sign_in_form() {
    let app = spawn_app().await;
    for path in [
        "/admin",
        "/admin/ticks/new",
        "/admin/import",
        "/admin/audit",
        "/admin/ticks/edit?time=x&symbol=y",
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status(), 303, "GET {path}");
        assert_eq!(location(&r), "/admin/sign-in", "GET {path}");
    }
    // Writes without a session are refused the same way, and write nothing.
    let r = post_form(
        &app,
        &app.client,
        "/admin/ticks/new",
        &[
            ("time", "2024-07-03T06:25:00Z"),
            ("symbol", "A"),
            ("price", "1"),
            ("volume", "1"),
        ],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(app.tick_count().await, 0);
    let form = page(&app, &app.client, "/admin/sign-in", 200).await;
    assert!(form.contains(r#"type="password""#), "{form}");
    assert!(form.contains(r#"name="token""#), "{form}");
}

#[actix_web::test]
async fn a_wrong_token_is_refused_with_the_form_shown_again() {
    let app = spawn_app().await;
    for wrong in ["wrong", "", &format!("{TOKEN}x"), &TOKEN[1..]] {
        let r = post_form(&app, &app.client, "/admin/sign-in", &[("token", wrong)]).await;
        assert_eq!(r.status(), 401, "token {wrong:?}");
        assert!(
            r.headers().get("set-cookie").is_none(),
            "no session for token {wrong:?}"
        );
        let body = r.text().await.unwrap();
        assert!(
            body.contains(r#"type="password""#),
            "the form is shown again"
        );
        assert!(body.contains("admin token"), "{body}");
    }
    assert_eq!(app.get("/admin").await.status(), 303, "still signed out");
}

#[actix_web::test]
async fn the_right_token_gives_a_strict_http_only_session_cookie() {
    let app = spawn_app().await;
    let r = post_form(&app, &app.client, "/admin/sign-in", &[("token", TOKEN)]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/admin");
    let cookie = set_cookie(&r);
    assert!(cookie.starts_with("candlewick_admin="), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("Path=/admin"), "{cookie}");
    assert!(!cookie.contains("Secure"), "no TLS configured: {cookie}");
    assert!(!cookie.contains(TOKEN), "the cookie is encrypted: {cookie}");
    let list = page(&app, &app.client, "/admin", 200).await;
    assert!(list.contains("Sign out"), "{list}");
    // Signed in, the sign-in page sends you on.
    let r = app.get("/admin/sign-in").await;
    assert_eq!(
        (r.status().as_u16(), location(&r)),
        (303, "/admin".to_owned())
    );
}

#[actix_web::test]
async fn with_secure_cookies_the_session_cookie_is_secure() {
    let app = spawn_app_with(&["--secure-cookies"]).await;
    let r = post_form(&app, &app.client, "/admin/sign-in", &[("token", TOKEN)]).await;
    assert_eq!(r.status(), 303);
    let cookie = set_cookie(&r);
    assert!(cookie.contains("Secure"), "{cookie}");
}

#[actix_web::test]
async fn signing_out_ends_the_session_and_needs_the_csrf_token() {
    let app = spawn_app().await;
    sign_in(&app, &app.client).await;
    let token = csrf(&app, &app.client).await;
    let r = post_form(&app, &app.client, "/admin/sign-out", &[]).await;
    assert_eq!(r.status(), 403, "sign-out without the CSRF token");
    assert_eq!(app.get("/admin").await.status(), 200, "still signed in");
    let r = post_form(
        &app,
        &app.client,
        "/admin/sign-out",
        &[("csrf_token", &token)],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/admin/sign-in?signed_out=1");
    assert_eq!(app.get("/admin").await.status(), 303, "signed out");
    assert!(
        page(&app, &app.client, "/admin/sign-in?signed_out=1", 200)
            .await
            .contains("You have signed out")
    );
}

#[actix_web::test]
async fn old_and_idle_sessions_expire_and_forged_cookies_are_ignored() {
    let app = spawn_app().await;
    let now = chrono::Utc::now().timestamp();
    let csrf = "c".repeat(43);
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get_with = |cookie: String| {
        let req = plain.get(app.url("/admin")).header("Cookie", cookie);
        async move { req.send().await.expect("GET /admin") }
    };

    // The crafted cookie is exactly what the server issues: a fresh one is accepted.
    let id = "crafted-session";
    candlewick::db::sessions::create(&app.pool, id, SESSION_MAX_AGE_SECS)
        .await
        .unwrap();
    let r = get_with(crafted_session_cookie(id, now - 60, now - 10, &csrf)).await;
    assert_eq!(r.status(), 200, "a fresh crafted session");

    let cases = [
        (
            "older than the absolute limit",
            now - SESSION_MAX_AGE_SECS - 5,
            now - 5,
        ),
        (
            "idle for too long",
            now - 2 * SESSION_IDLE_SECS,
            now - SESSION_IDLE_SECS - 5,
        ),
    ];
    for (what, signed_in_at, last_seen) in cases {
        let r = get_with(crafted_session_cookie(id, signed_in_at, last_seen, &csrf)).await;
        assert_eq!(r.status(), 303, "{what}");
        assert_eq!(location(&r), "/admin/sign-in?expired=1", "{what}");
        let removal = set_cookie(&r);
        assert!(
            removal.contains("Max-Age=0") || removal.contains("expires="),
            "{what}: the cookie is removed: {removal}"
        );
    }
    assert!(
        page(&app, &plain, "/admin/sign-in?expired=1", 200)
            .await
            .contains("expired")
    );

    let r = get_with("candlewick_admin=forged-value-that-is-not-encrypted".into()).await;
    assert_eq!(
        (r.status().as_u16(), location(&r)),
        (303, "/admin/sign-in".to_owned()),
        "a forged cookie"
    );
}

#[actix_web::test]
async fn failed_sign_ins_are_rate_limited_per_client() {
    let app = spawn_app().await;
    for i in 0..5 {
        let r = post_form(&app, &app.client, "/admin/sign-in", &[("token", "guess")]).await;
        assert_eq!(r.status(), 401, "attempt {}", i + 1);
    }
    // The sixth attempt is refused before the token is even compared, right token or not.
    let other = browser();
    let r = post_form(&app, &other, "/admin/sign-in", &[("token", TOKEN)]).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert!(r.text().await.unwrap().contains("Too many failed sign-ins"));
    assert_eq!(
        other.get(app.url("/admin")).send().await.unwrap().status(),
        303,
        "no session was given"
    );

    // Another server (another limiter) is not affected: limits are per server and per address.
    let fresh = spawn_app().await;
    sign_in(&fresh, &fresh.client).await;
}

#[actix_web::test]
async fn admin_pages_carry_the_security_headers_and_are_not_cached() {
    let app = spawn_app().await;
    let signed_out = app.get("/admin/sign-in").await;
    sign_in(&app, &app.client).await;
    let mut responses = vec![("/admin/sign-in", signed_out)];
    for path in [
        "/admin",
        "/admin/ticks/new",
        "/admin/import",
        "/admin/audit",
        "/admin/no-such-page",
    ] {
        responses.push((path, app.get(path).await));
    }
    for (path, r) in responses {
        let h = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(
            h("content-security-policy").contains("frame-ancestors 'none'"),
            "{path}: CSP"
        );
        assert!(
            h("content-security-policy").contains("script-src 'self'"),
            "{path}: CSP"
        );
        assert_eq!(h("x-content-type-options"), "nosniff", "{path}");
        assert!(!h("referrer-policy").is_empty(), "{path}: Referrer-Policy");
        assert_eq!(h("cache-control"), "no-store", "{path}");
        assert!(
            h("content-type").starts_with("text/html"),
            "{path}: {}",
            h("content-type")
        );
    }
}

/// GET (no form) or POST (a form) `path` with exactly the cookie `cookie`.
async fn with_cookie(
    app: &crate::helpers::TestApp,
    path: &str,
    cookie: &str,
    form: Option<&[(&str, &str)]>,
) -> reqwest::Response {
    let client = plain_client();
    let req = match form {
        None => client.get(app.url(path)),
        Some(fields) => client.post(app.url(path)).form(fields),
    };
    req.header("Cookie", cookie).send().await.unwrap()
}

/// The CSRF token of the session behind `cookie`.
async fn csrf_with(app: &crate::helpers::TestApp, cookie: &str) -> String {
    let r = with_cookie(app, "/admin/ticks/new", cookie, None).await;
    assert_eq!(r.status(), 200, "the session works");
    crate::admin_support::csrf_of(&r.text().await.unwrap())
}

/// A saved cookie of an ended session: redirected to sign in, and its old CSRF token writes
/// nothing (no tick, no audit row).
async fn assert_cookie_is_dead(
    app: &crate::helpers::TestApp,
    cookie: &str,
    csrf: &str,
    what: &str,
) {
    let r = with_cookie(app, "/admin", cookie, None).await;
    assert_eq!(r.status(), 303, "{what}: GET /admin");
    assert!(location(&r).starts_with("/admin/sign-in"), "{what}");
    let form = [
        ("csrf_token", csrf),
        ("time", "2024-07-03T06:25:00Z"),
        ("symbol", "REPLAY"),
        ("price", "1"),
        ("volume", "1"),
    ];
    let r = with_cookie(app, "/admin/ticks/new", cookie, Some(&form)).await;
    assert_eq!(r.status(), 303, "{what}: the create is refused");
    assert!(location(&r).starts_with("/admin/sign-in"), "{what}");
    assert_eq!(app.tick_count().await, 0, "{what}: nothing written");
    assert!(
        crate::admin_support::audit_rows(app).is_empty(),
        "{what}: nothing audited"
    );
}

#[actix_web::test]
async fn a_saved_cookie_stops_working_once_its_session_signs_out() {
    let app = spawn_app().await;
    let cookie = saved_session_cookie(&app).await;
    let token = csrf_with(&app, &cookie).await;
    let r = with_cookie(
        &app,
        "/admin/sign-out",
        &cookie,
        Some(&[("csrf_token", &token)]),
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_cookie_is_dead(&app, &cookie, &token, "after signing out").await;

    // Signing in again starts a new session; the old cookie stays dead.
    let fresh = saved_session_cookie(&app).await;
    assert_ne!(fresh, cookie);
    csrf_with(&app, &fresh).await;
    assert_cookie_is_dead(&app, &cookie, &token, "after a new sign-in").await;
}

#[actix_web::test]
async fn signing_out_everywhere_ends_the_sessions_of_every_browser() {
    let app = spawn_app().await;
    let elsewhere = saved_session_cookie(&app).await;
    let elsewhere_csrf = csrf_with(&app, &elsewhere).await;
    let here = saved_session_cookie(&app).await;
    let here_csrf = csrf_with(&app, &here).await;
    let layout = with_cookie(&app, "/admin", &here, None).await;
    let layout = layout.text().await.unwrap();
    assert!(
        layout.contains(r#"action="/admin/sign-out-everywhere""#),
        "the layout offers it: {layout}"
    );

    let r = with_cookie(&app, "/admin/sign-out-everywhere", &here, Some(&[])).await;
    assert_eq!(r.status(), 403, "without the CSRF token");
    csrf_with(&app, &elsewhere).await;

    let r = with_cookie(
        &app,
        "/admin/sign-out-everywhere",
        &here,
        Some(&[("csrf_token", &here_csrf)]),
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/admin/sign-in?signed_out=everywhere");
    assert_cookie_is_dead(&app, &elsewhere, &elsewhere_csrf, "the other browser").await;
    assert_cookie_is_dead(&app, &here, &here_csrf, "this browser").await;
    assert!(
        page(
            &app,
            &app.client,
            "/admin/sign-in?signed_out=everywhere",
            200
        )
        .await
        .contains("signed out everywhere")
    );
    // Signing in works as before.
    let fresh = saved_session_cookie(&app).await;
    csrf_with(&app, &fresh).await;
}

/// Five wrong tokens from `forwarded_for`, then the right one from `then_from`; returns its status.
async fn after_five_failures(
    app: &crate::helpers::TestApp,
    forwarded_for: &str,
    then_from: &str,
) -> u16 {
    let client = plain_client();
    for i in 0..5 {
        let r = client
            .post(app.url("/admin/sign-in"))
            .header("X-Forwarded-For", forwarded_for)
            .form(&[("token", "guess")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "attempt {}", i + 1);
    }
    let r = client
        .post(app.url("/admin/sign-in"))
        .header("X-Forwarded-For", then_from)
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

#[actix_web::test]
async fn sign_in_limits_follow_forwarded_addresses_only_behind_a_trusted_proxy() {
    // Trusted: each forwarded client has its own limit.
    let app = spawn_app_with(&["--trust-forwarded"]).await;
    assert_eq!(
        after_five_failures(&app, "203.0.113.5", "203.0.113.6").await,
        303
    );
    let again = plain_client()
        .post(app.url("/admin/sign-in"))
        .header("X-Forwarded-For", "203.0.113.5")
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 429, "the failing client stays limited");

    // Not trusted: the header is the client's to choose and changes nothing.
    let app = spawn_app().await;
    assert_eq!(
        after_five_failures(&app, "203.0.113.5", "203.0.113.6").await,
        429
    );
}

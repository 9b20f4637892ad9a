//! `/admin/audit`: who changed what, with filters.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use crate::admin_support::{admin, csrf, page, post_form, unescape};
use crate::helpers::spawn_app;

const T: &str = "2024-07-03T06:25:00Z";

/// The audit page's rows as `actor|action|symbol`.
fn rows(html: &str) -> Vec<String> {
    let html = unescape(html);
    let Some(body) = html.split("<tbody>").nth(1) else {
        return Vec::new();
    };
    body.split("<tr>")
        .skip(1)
        .map(|tr| {
            let cells: Vec<&str> = tr
                .split("<td")
                .skip(1)
                .map(|td| td.split_once('>').unwrap().1.split("</td>").next().unwrap())
                .collect();
            format!("{}|{}|{}", cells[1], cells[2], cells[3])
        })
        .collect()
}

#[actix_web::test]
async fn the_audit_trail_lists_every_write_with_who_and_filters() {
    let app = spawn_app().await;
    let r = app
        .post_ticks_json(
            &serde_json::json!({"time": T, "symbol": "API/X", "price": 1.0, "volume": 1.0}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let client = admin(&app).await;
    let token = csrf(&app, client).await;
    for (path, form) in [
        (
            "/admin/ticks/new",
            vec![
                ("time", T),
                ("symbol", "ADM/X"),
                ("price", "2"),
                ("volume", "1"),
            ],
        ),
        (
            "/admin/ticks/edit",
            vec![
                ("time", T),
                ("symbol", "ADM/X"),
                ("price", "3"),
                ("volume", "1"),
            ],
        ),
        (
            "/admin/ticks/delete",
            vec![("time", T), ("symbol", "API/X")],
        ),
    ] {
        let mut form = form;
        form.push(("csrf_token", &token));
        assert_eq!(
            post_form(&app, client, path, &form).await.status(),
            303,
            "{path}"
        );
    }

    let all = page(&app, client, "/admin/audit", 200).await;
    assert_eq!(
        rows(&all),
        [
            "admin session|delete|API/X",
            "admin session|update|ADM/X",
            "admin session|insert|ADM/X",
            "api token|insert|API/X"
        ],
        "newest first"
    );
    assert!(
        unescape(&all).contains(r#"{"price":2.0"#) && unescape(&all).contains(r#""price":3.0"#),
        "before and after values"
    );

    let cases = [
        ("?actor=api+token", vec!["api token|insert|API/X"]),
        ("?action=update", vec!["admin session|update|ADM/X"]),
        (
            "?symbol=API/X",
            vec!["admin session|delete|API/X", "api token|insert|API/X"],
        ),
        (
            "?actor=admin+session&action=insert",
            vec!["admin session|insert|ADM/X"],
        ),
        ("?from=2999-01-01T00:00:00Z", vec![]),
        ("?to=2000-01-01T00:00", vec![]),
    ];
    for (query, want) in cases {
        let html = page(&app, client, &format!("/admin/audit{query}"), 200).await;
        assert_eq!(rows(&html), want, "{query}");
    }
    for bad in ["?actor=root", "?action=drop", "?from=tomorrow", "?before=x"] {
        let html = page(&app, client, &format!("/admin/audit{bad}"), 422).await;
        assert!(
            html.contains("field-error") || html.contains("problem"),
            "{bad}"
        );
    }
}

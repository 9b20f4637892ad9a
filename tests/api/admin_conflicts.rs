//! A form loaded before another writer changed its tick writes nothing: it comes back (409)
//! with the tick as it is now.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use serde_json::json;

use crate::admin_support::{admin, csrf_of, page};
use crate::helpers::{TOKEN, TestApp, spawn_app};

/// The value of the hidden field `name` in a form.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html
        .find(&marker)
        .map(|i| i + marker.len())
        .unwrap_or_else(|| panic!("a {name} field: {html}"));
    let end = html[start..].find('"').expect("the end of the value");
    html[start..start + end].to_owned()
}

async fn put_price(app: &TestApp, time: &str, symbol: &str, price: f64) {
    let r = app
        .client
        .put(app.url(&format!("/api/ticks?time={time}&symbol={symbol}")))
        .bearer_auth(TOKEN)
        .json(&json!({ "price": price, "volume": 1.0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "PUT through the API");
}

fn price_volume(app: &TestApp, symbol: &str) -> String {
    app.psql(&format!(
        "SELECT price || '|' || volume FROM ticks WHERE symbol = '{symbol}'"
    ))
    .trim()
    .to_owned()
}

#[actix_web::test]
async fn an_edit_form_loaded_before_another_write_does_not_undo_it() {
    let app = spawn_app().await;
    let t = "2024-07-03T06:25:00Z";
    let r = app
        .post_ticks_json(&json!({ "time": t, "symbol": "LOST", "price": 100.0, "volume": 1.0 }))
        .await;
    assert_eq!(r.status(), 201);
    let client = admin(&app).await;
    let path = format!("/admin/ticks/edit?time={t}&symbol=LOST");
    let form = page(&app, client, &path, 200).await;
    assert!(form.contains(r#"name="price" value="100""#), "{form}");
    let fields = |price: &str, form: &str| {
        vec![
            ("csrf_token", csrf_of(form)),
            ("time", t.to_owned()),
            ("symbol", "LOST".to_owned()),
            ("price", price.to_owned()),
            ("volume", "5".to_owned()),
            ("seen_price", hidden(form, "seen_price")),
            ("seen_volume", hidden(form, "seen_volume")),
        ]
    };
    let stale = fields("100", &form);
    put_price(&app, t, "LOST", 200.0).await;

    let r = client
        .post(app.url("/admin/ticks/edit"))
        .form(&stale)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "a form loaded before the API's write");
    let reshown = r.text().await.unwrap();
    assert!(reshown.contains("changed by another writer"), "{reshown}");
    assert!(
        reshown.contains(r#"name="price" value="200""#),
        "current values: {reshown}"
    );
    assert_eq!(price_volume(&app, "LOST"), "200|1", "nothing was written");

    // The re-shown form carries the current values: submitting it now applies.
    let r = client
        .post(app.url("/admin/ticks/edit"))
        .form(&fields("200", &reshown))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(price_volume(&app, "LOST"), "200|5");
}

#[actix_web::test]
async fn a_delete_confirmed_on_a_stale_page_deletes_nothing() {
    let app = spawn_app().await;
    let t = "2024-07-03T06:26:00Z";
    let r = app
        .post_ticks_json(&json!({ "time": t, "symbol": "GONE", "price": 100.0, "volume": 1.0 }))
        .await;
    assert_eq!(r.status(), 201);
    let client = admin(&app).await;
    let confirm = page(
        &app,
        client,
        &format!("/admin/ticks/delete?time={t}&symbol=GONE"),
        200,
    )
    .await;
    let fields = |html: &str| {
        vec![
            ("csrf_token", csrf_of(html)),
            ("time", t.to_owned()),
            ("symbol", "GONE".to_owned()),
            ("seen_price", hidden(html, "seen_price")),
            ("seen_volume", hidden(html, "seen_volume")),
        ]
    };
    let stale = fields(&confirm);
    put_price(&app, t, "GONE", 200.0).await;

    let r = client
        .post(app.url("/admin/ticks/delete"))
        .form(&stale)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let reshown = r.text().await.unwrap();
    assert!(reshown.contains("Nothing was deleted"), "{reshown}");
    assert!(
        reshown.contains("<dd>200</dd>"),
        "current values: {reshown}"
    );
    assert_eq!(price_volume(&app, "GONE"), "200|1", "still there");

    let r = client
        .post(app.url("/admin/ticks/delete"))
        .form(&fields(&reshown))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(price_volume(&app, "GONE"), "");
}

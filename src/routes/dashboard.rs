//! `GET /`: the live chart page. It carries no data itself; `static/chart.js` opens `/ws`.

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;

use crate::domain::{Interval, Symbol};
use crate::error::PageError;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(show_dashboard));
}

/// The modules `static/chart.js` imports, preloaded by the page so the browser fetches them
/// all at once instead of discovering them one import at a time.
const MODULES: [&str; 11] = [
    "store.js",
    "live.js",
    "history.js",
    "plots.js",
    "indicators.js",
    "legend.js",
    "markers.js",
    "export.js",
    "zone.js",
    "prefs.js",
    "keys.js",
];

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    symbol: String,
    interval: Interval,
    intervals: Vec<IntervalChoice>,
    modules: &'static [&'static str],
}

struct IntervalChoice {
    value: &'static str,
    /// The chart's one source of each interval's width.
    seconds: i64,
    selected: bool,
}

impl DashboardPage {
    /// `?symbol=` and `?interval=` choose what the chart opens on. They come from shared links
    /// and hand-edited URLs, so anything invalid falls back to the default instead of an error.
    fn from_query(query: &str, default_symbol: &Symbol) -> Self {
        let mut symbol = None;
        let mut interval = None;
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "symbol" => symbol = Symbol::parse(&value).ok(),
                "interval" => interval = Interval::parse(&value).ok(),
                _ => {}
            }
        }
        let interval = interval.unwrap_or(Interval::M1);
        Self {
            symbol: symbol.unwrap_or_else(|| default_symbol.clone()).to_string(),
            interval,
            intervals: Interval::ALL
                .into_iter()
                .map(|i| IntervalChoice {
                    value: i.as_str(),
                    seconds: i.seconds(),
                    selected: i == interval,
                })
                .collect(),
            modules: &MODULES,
        }
    }
}

async fn show_dashboard(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let page = DashboardPage::from_query(req.query_string(), &state.default_symbol);
    Ok(crate::render::render(&page)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn btc() -> Symbol {
        Symbol::parse("BTC/USD").expect("a valid symbol")
    }

    #[test]
    fn the_query_picks_symbol_and_interval() {
        let page = DashboardPage::from_query("symbol=ETH%2FUSD&interval=4h", &btc());
        assert_eq!(
            (page.symbol.as_str(), page.interval),
            ("ETH/USD", Interval::H4)
        );
        let selected: Vec<_> = page
            .intervals
            .iter()
            .filter(|i| i.selected)
            .map(|i| i.value)
            .collect();
        assert_eq!(selected, ["4h"]);
    }

    #[test]
    fn each_interval_option_carries_its_width_in_seconds() {
        let html = DashboardPage::from_query("interval=1h", &btc())
            .render()
            .expect("the page renders");
        for interval in Interval::ALL {
            let selected = if interval == Interval::H1 {
                " selected"
            } else {
                ""
            };
            let option = format!(
                r#"<option value="{interval}" data-seconds="{}"{selected}>{interval}</option>"#,
                interval.seconds()
            );
            assert!(html.contains(&option), "{option} in {html}");
        }
    }

    #[test]
    fn invalid_or_missing_choices_fall_back_to_the_defaults() {
        for query in [
            "",
            "symbol=&interval=",
            "symbol=%00x&interval=2m",
            "symbol=%20BTC",
            "garbage",
        ] {
            let page = DashboardPage::from_query(query, &btc());
            assert_eq!(
                (page.symbol.as_str(), page.interval),
                ("BTC/USD", Interval::M1),
                "{query:?}"
            );
        }
    }

    #[test]
    fn a_symbol_with_markup_is_escaped() {
        let page = DashboardPage::from_query("symbol=%3Cb%3Ex'%26", &btc());
        let html = page.render().expect("the page renders");
        assert!(!html.contains("<b>"), "{html}");
        assert!(html.contains("&#60;b&#62;"), "{html}");
    }

    #[test]
    fn the_page_loads_its_scripts_from_files_only() {
        let html = DashboardPage::from_query("", &btc())
            .render()
            .expect("the page renders");
        assert!(
            html.contains(r#"<script defer src="/static/vendor/lightweight-charts.js"></script>"#)
        );
        assert!(html.contains(r#"<script type="module" src="/static/chart.js"></script>"#));
        assert!(html.contains(r#"<script src="/static/theme.js"></script>"#));
        let inline_handler = html.split(" on").skip(1).any(|rest| {
            rest.split_once('=').is_some_and(|(name, _)| {
                !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase())
            })
        });
        assert!(!html.contains("<script>") && !html.contains(" style=") && !inline_handler);
    }

    #[test]
    fn the_page_preloads_exactly_the_modules_the_chart_imports() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
        let mut imported = std::collections::BTreeSet::new();
        let mut pending = vec!["chart.js".to_owned()];
        while let Some(file) = pending.pop() {
            let text = std::fs::read_to_string(dir.join(&file))
                .unwrap_or_else(|e| panic!("reading static/{file}: {e}"));
            for line in text.lines() {
                let Some((_, rest)) = line.split_once("from './") else {
                    continue;
                };
                let module = rest.split('\'').next().unwrap_or_default().to_owned();
                if imported.insert(module.clone()) {
                    pending.push(module);
                }
            }
        }
        let preloaded: std::collections::BTreeSet<String> =
            MODULES.iter().map(|m| (*m).to_owned()).collect();
        assert_eq!(preloaded, imported);
        let html = DashboardPage::from_query("", &btc())
            .render()
            .expect("the page renders");
        for m in MODULES {
            assert!(html.contains(&format!(r#"<link rel="modulepreload" href="/static/{m}">"#)));
        }
    }
}

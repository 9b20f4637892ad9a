//! How Chromium runs for the bench and the browser tests (which include this file): headless,
//! no sandbox (they run as root), nothing that phones home, one window size.

pub const HEADLESS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,800",
];

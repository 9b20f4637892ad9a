//! The chart's JavaScript unit tests (`tests/js/*.test.js`, node's built-in runner), run by
//! `cargo test` so they run wherever the Rust tests do. Node.js is a build requirement already
//! (the build fetches the chart library with npm).

use std::path::Path;
use std::process::Command;

#[test]
fn the_javascript_unit_tests_pass_under_node() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<String> = std::fs::read_dir(root.join("tests/js"))
        .expect("reading tests/js")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".test.js"))
        .map(|name| format!("tests/js/{name}"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no tests/js/*.test.js found");
    let out = Command::new("node")
        .arg("--test")
        .args(&files)
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| {
            panic!("running `node --test` (Node.js 18+, e.g. `apt-get install nodejs`): {e}")
        });
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "node --test failed ({}):\n{report}",
        out.status
    );
    // Each file must have run tests: a file that fails to load counts as one failed test, but an
    // empty one would pass silently.
    let passed = report
        .lines()
        .find_map(|l| l.strip_prefix("# pass "))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0);
    assert!(
        passed >= files.len() as u32,
        "only {passed} JavaScript tests ran:\n{report}"
    );
}

//! Brings in the chart library from npm (package-lock.json) so that `cargo build` on a fresh
//! clone is self-contained; `src/routes/assets.rs` embeds the file this makes sure exists.

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

/// The one file of the npm package that the binary embeds.
const LIBRARY: &str =
    "node_modules/lightweight-charts/dist/lightweight-charts.standalone.production.js";

fn main() {
    println!("cargo:rerun-if-changed=package.json");
    println!("cargo:rerun-if-changed=package-lock.json");
    // Not the library file itself: this script creates it, and a file newer than the script's
    // last run would make every following build run the script and recompile the crate again.
    // rust-embed and askama only track files that already exist; new ones must trigger a rebuild too.
    println!("cargo:rerun-if-changed=static");
    println!("cargo:rerun-if-changed=templates");

    let root = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&root);
    let library = root.join(LIBRARY);
    if library.is_file() && !lockfile_changed_since_install(root) {
        return;
    }
    if let Err(e) = npm_ci(root) {
        panic!("{e}");
    }
    assert!(
        library.is_file(),
        "`npm ci` succeeded but {LIBRARY} is missing; is package-lock.json up to date?"
    );
}

/// npm rewrites `node_modules/.package-lock.json` on every install, so an older one means the
/// lockfile changed (a pull, a version bump) after the last install.
fn lockfile_changed_since_install(root: &Path) -> bool {
    let modified = |p: &Path| {
        p.metadata()
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH)
    };
    modified(&root.join("package-lock.json"))
        > modified(&root.join("node_modules/.package-lock.json"))
}

fn npm_ci(root: &Path) -> Result<(), String> {
    const NEEDS: &str = "candlewick's build fetches the chart library (lightweight-charts) with npm \
        from package-lock.json; it needs Node.js 18+ with npm (e.g. `apt-get install nodejs npm`)";
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    let out = Command::new(npm)
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(root)
        .output()
        .map_err(|e| {
            format!("{NEEDS}, but `{npm}` could not be run ({e}): install them and build again")
        })?;
    if out.status.success() {
        return Ok(());
    }
    // npm's own message comes first; its JavaScript stack trace would only bury it.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            !l.trim_start_matches("npm error")
                .trim_start()
                .starts_with("at ")
        })
        .take(12)
        .collect();
    Err(format!(
        "{NEEDS} and access to the npm registry, but `npm ci` in {} failed ({}). npm said:\n{}",
        root.display(),
        out.status,
        said.join("\n")
    ))
}

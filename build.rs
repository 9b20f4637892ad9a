//! Brings in the chart library from npm (package-lock.json) so that `cargo build` on a fresh
//! clone is self-contained. Everything it writes stays under `OUT_DIR`: the manifest and the
//! lockfile are copied there and `npm ci` runs there; `src/routes/assets.rs` embeds the file
//! named by `CANDLEWICK_CHART_LIBRARY`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The one file of the npm package that the binary embeds, inside `node_modules`.
const LIBRARY: &str = "lightweight-charts/dist/lightweight-charts.standalone.production.js";
const MANIFESTS: [&str; 2] = ["package.json", "package-lock.json"];

fn main() {
    for m in MANIFESTS {
        println!("cargo:rerun-if-changed={m}");
    }
    // rust-embed and askama only track files that already exist; new ones must trigger a rebuild too.
    println!("cargo:rerun-if-changed=static");
    println!("cargo:rerun-if-changed=templates");
    // sqlx::migrate!() embeds migrations/ at compile time; sqlx documents that a build script
    // must name the directory, or a new migration file is not picked up without a rebuild.
    println!("cargo:rerun-if-changed=migrations");

    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let npm_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("npm");
    let library = npm_dir.join("node_modules").join(LIBRARY);
    if let Err(e) = install(&root, &npm_dir, &library) {
        panic!("{e}");
    }
    println!(
        "cargo:rustc-env=CANDLEWICK_CHART_LIBRARY={}",
        library.display()
    );
}

/// Runs `npm ci` in `npm_dir` unless the library is there from the same lockfile.
fn install(root: &Path, npm_dir: &Path, library: &Path) -> Result<(), String> {
    let lockfile = read(&root.join("package-lock.json"))?;
    let installed_from = fs::read(npm_dir.join("package-lock.json")).ok();
    if library.is_file() && installed_from.as_deref() == Some(lockfile.as_slice()) {
        return Ok(());
    }
    fs::create_dir_all(npm_dir).map_err(|e| format!("creating {}: {e}", npm_dir.display()))?;
    for m in MANIFESTS {
        fs::write(npm_dir.join(m), read(&root.join(m))?)
            .map_err(|e| format!("writing {m} to {}: {e}", npm_dir.display()))?;
    }
    npm_ci(npm_dir)?;
    if !library.is_file() {
        return Err(format!(
            "`npm ci` succeeded but node_modules/{LIBRARY} is missing; is package-lock.json up to date?"
        ));
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

fn npm_ci(dir: &Path) -> Result<(), String> {
    const NEEDS: &str = "candlewick's build fetches the chart library (lightweight-charts) with npm \
        from package-lock.json; it needs Node.js 18+ with npm (e.g. `apt-get install nodejs npm`)";
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    let out = Command::new(npm)
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
        .current_dir(dir)
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
        dir.display(),
        out.status,
        said.join("\n")
    ))
}

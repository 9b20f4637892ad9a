//! Generated secrets kept in the data dir (mode 0600), created once.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;
use rand::distr::{Alphanumeric, SampleString};
use secrecy::SecretString;

/// Reads the secret in `path`, or writes a new random one of `len` characters there.
pub fn load_or_create(path: &Path, len: usize) -> anyhow::Result<SecretString> {
    if let Ok(text) = fs::read_to_string(path) {
        let s = text.trim();
        if !s.is_empty() {
            // Tighten a file someone loosened by hand.
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
            return Ok(s.to_owned().into());
        }
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let secret = Alphanumeric.sample_string(&mut rand::rng(), len);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{secret}").with_context(|| format!("writing {}", path.display()))?;
    Ok(secret.into())
}

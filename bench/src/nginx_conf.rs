//! The shipped `deploy/nginx.conf` made to run unprivileged on loopback ports: its upstream's
//! `server` lines point at the replicas, its servers listen on free ports, every other
//! directive is the shipped one. `viewers --proxy nginx` runs viewers through it, and the
//! replicas test (`tests/api/replicas.rs`, which includes this file) restarts replicas behind
//! it; so both measure and test what users install. Standard library only, for that reason.

use std::path::{Path, PathBuf};

/// How the shipped site is changed to run here.
pub struct Site<'a> {
    /// The replicas' ports: the shipped upstream `server` lines become one line each, with
    /// the shipped parameters.
    pub replicas: &'a [u16],
    /// Where the proxying server listens (the shipped `listen 443`).
    pub port: u16,
    /// Where the redirecting server listens (the shipped `listen 80`).
    pub redirect_port: u16,
    /// The certificate and key to serve TLS with; without, plain HTTP and no `ssl_` lines.
    pub tls: Option<(&'a Path, &'a Path)>,
    /// `reuseport` on the proxying listen line: with several workers, the kernel spreads the
    /// connections over them evenly (each holds at most its open-file limit).
    pub reuseport: bool,
    /// Directives added to the proxied location, after `proxy_pass`.
    pub location_extra: &'a str,
}

/// The site as `Site` says, from the text of the shipped file.
pub fn site(shipped: &str, s: &Site) -> Result<String, String> {
    if s.replicas.is_empty() {
        return Err("no replicas to proxy to".into());
    }
    let mut upstream_written = false;
    let mut out = String::new();
    for line in shipped.lines() {
        let t = line.trim_start();
        let indent = &line[..line.len() - t.len()];
        let replaced = if let Some(rest) = t.strip_prefix("server 127.0.0.1:") {
            // The replicas in place of the shipped lines, with the first one's parameters.
            if !upstream_written {
                let params = rest.split_once(' ').map_or(";", |(_, p)| p);
                for port in s.replicas {
                    out.push_str(&format!("{indent}server 127.0.0.1:{port} {params}\n"));
                }
                upstream_written = true;
            }
            continue;
        } else if t == "listen 80;" {
            format!("{indent}listen 127.0.0.1:{};", s.redirect_port)
        } else if t == "listen 443 ssl http2;" {
            let reuse = if s.reuseport { " reuseport" } else { "" };
            match s.tls {
                Some(_) => format!("{indent}listen 127.0.0.1:{} ssl http2{reuse};", s.port),
                None => format!("{indent}listen 127.0.0.1:{}{reuse};", s.port),
            }
        } else if t.starts_with("listen [::]") {
            continue;
        } else if let Some((cert, key)) = s.tls {
            if t.starts_with("ssl_certificate ") {
                format!("{indent}ssl_certificate {};", cert.display())
            } else if t.starts_with("ssl_certificate_key ") {
                format!("{indent}ssl_certificate_key {};", key.display())
            } else {
                line.to_owned()
            }
        } else if t.starts_with("ssl_") {
            continue;
        } else {
            line.to_owned()
        };
        out.push_str(&replaced);
        out.push('\n');
        if t.starts_with("proxy_pass ") && !s.location_extra.is_empty() {
            out.push_str(&format!("{indent}{}\n", s.location_extra));
        }
    }
    if !upstream_written {
        return Err("the shipped config has no upstream servers to replace".into());
    }
    Ok(out)
}

/// Writes the main config around `site` into `dir` (every path nginx uses is in there, and
/// the workers, who run as nobody when nginx starts as root, may write them) and returns its
/// path. Each of `workers` processes holds up to `connections` connections.
pub fn main_conf(
    dir: &Path,
    site: &str,
    workers: usize,
    connections: usize,
) -> std::io::Result<PathBuf> {
    for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        std::fs::create_dir_all(dir.join("temp").join(sub))?;
    }
    std::fs::write(dir.join("candlewick.conf"), site)?;
    let d = dir.display();
    let main = format!(
        "worker_processes {workers};\n\
         worker_rlimit_nofile {files};\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         events {{ worker_connections {connections}; }}\n\
         http {{\n\
             access_log off;\n\
             client_body_temp_path {d}/temp/body;\n\
             proxy_temp_path {d}/temp/proxy;\n\
             fastcgi_temp_path {d}/temp/fastcgi;\n\
             uwsgi_temp_path {d}/temp/uwsgi;\n\
             scgi_temp_path {d}/temp/scgi;\n\
             include {d}/candlewick.conf;\n\
         }}\n",
        files = connections + 100,
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, main)?;
    std::process::Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(dir)
        .status()?;
    Ok(path)
}

/// Where a program (nginx, and the tools the replicas test also uses) is installed: on PATH or
/// in Debian's sbin, which root's PATH may lack; `None` when it is not.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

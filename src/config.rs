//! Every setting is a flag and an environment variable; the flag wins (clap's `env`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;

use crate::domain::Symbol;

#[derive(Debug, Parser)]
#[command(
    name = "candlewick",
    version,
    about = "Real-time candlestick dashboard over PostgreSQL tick data"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings for `serve`, also accepted without the subcommand.
    #[command(flatten)]
    pub serve: Settings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the dashboard server (the default).
    Serve(Settings),
    /// Apply the database migrations and exit.
    Migrate(DbSettings),
    /// Bulk-load a `time,symbol,price,volume` CSV file (all or nothing).
    Import(ImportArgs),
}

/// Where the database is: an external URL or the embedded cluster under the data dir.
#[derive(Debug, Clone, Args)]
pub struct DbSettings {
    /// PostgreSQL URL; unset means an embedded cluster under the data dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,
    /// Directory for the embedded cluster and generated secrets.
    #[arg(long, env = "CANDLEWICK_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// With the embedded cluster: `auto` preloads and uses TimescaleDB when it is installed
    /// on this machine, `off` keeps to plain PostgreSQL.
    #[arg(
        long,
        env = "CANDLEWICK_EMBEDDED_TIMESCALEDB",
        value_enum,
        default_value_t = EmbeddedTimescaleDb::Auto
    )]
    pub embedded_timescaledb: EmbeddedTimescaleDb,
}

/// Whether the embedded cluster uses TimescaleDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EmbeddedTimescaleDb {
    /// When it is installed.
    Auto,
    /// Never: plain PostgreSQL.
    Off,
}

#[derive(Debug, Clone, Args)]
pub struct Settings {
    #[command(flatten)]
    pub db: DbSettings,
    /// Address to listen on.
    #[arg(long, env = "CANDLEWICK_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Token for the admin pages and the write API, at least 16 characters; unset means
    /// generated once and kept in `<data-dir>/admin-token`.
    #[arg(long, env = "CANDLEWICK_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<SecretString>,
    /// Run the synthetic demo feed [env: CANDLEWICK_DEMO=1|0] (default: on with the embedded
    /// database, off with DATABASE_URL).
    #[arg(long, overrides_with = "no_demo")]
    pub demo: bool,
    /// Do not run the demo feed.
    #[arg(long, overrides_with = "demo")]
    pub no_demo: bool,
    /// `CANDLEWICK_DEMO=1|0`; read by hand so that `--demo`/`--no-demo` stay plain switches.
    #[arg(skip)]
    pub demo_env: Option<bool>,
    /// The chart's default symbol.
    #[arg(long, env = "CANDLEWICK_SYMBOL", default_value = "BTC/USD", value_parser = parse_symbol)]
    pub symbol: Symbol,
    /// How often the poller reads what changed (e.g. `1s`, `500ms`).
    #[arg(long, env = "CANDLEWICK_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// How much history the live chart holds (e.g. `7d`).
    #[arg(long, env = "CANDLEWICK_WINDOW", default_value = "7d", value_parser = parse_duration)]
    pub window: Duration,
    /// How long a channel's bars stay in memory once nobody watches it and its resume grace is
    /// over (e.g. `5m`).
    #[arg(long, env = "CANDLEWICK_KEEP_UNWATCHED", default_value = "5m", value_parser = parse_duration)]
    pub keep_unwatched: Duration,
    /// How long a channel whose last viewer left keeps numbering and keeping its updates, so
    /// that a chart back within it resumes from memory (e.g. `60s`); later, the journal serves
    /// the resume.
    #[arg(long, env = "CANDLEWICK_RESUME_GRACE", default_value = "60s", value_parser = parse_duration)]
    pub resume_grace: Duration,
    /// The longest a read of the JSON/CSV API may run in the database (e.g. `15s`); a longer one
    /// is cancelled there and answered 503.
    #[arg(long, env = "CANDLEWICK_API_READ_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub api_read_timeout: Duration,
    /// Browser origins besides the server's own that may open `/ws`, comma-separated
    /// (`https://a.example,https://b.example`; `*` allows every origin).
    #[arg(long, env = "CANDLEWICK_ALLOWED_ORIGINS", default_value = "", value_parser = AllowedOrigins::parse)]
    pub allowed_origins: AllowedOrigins,
    /// Mark the session cookie `Secure` (set when serving behind TLS).
    #[arg(long, env = "CANDLEWICK_SECURE_COOKIES")]
    pub secure_cookies: bool,
    /// Behind a reverse proxy: take the client address (logs, sign-in limits) from
    /// `X-Forwarded-For`/`Forwarded` as the proxy sets them. Off, it is the TCP peer, since
    /// any client can send those headers.
    #[arg(long, env = "CANDLEWICK_TRUST_FORWARDED")]
    pub trust_forwarded: bool,
    /// Tests only: faults injected into the poller (never set from the command line).
    #[arg(skip)]
    pub feed_faults: crate::feed::Faults,
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub db: DbSettings,
    /// The CSV file (header `time,symbol,price,volume`); `-` reads standard input.
    pub file: PathBuf,
}

impl Settings {
    /// Whether the demo feed runs: the flags win over `CANDLEWICK_DEMO`, which wins over the default.
    pub fn demo_enabled(&self) -> bool {
        if self.demo {
            return true;
        }
        if self.no_demo {
            return false;
        }
        self.demo_env.unwrap_or(self.db.database_url.is_none())
    }
}

impl Cli {
    /// Parses the command line and the environment; a malformed value exits naming the flag.
    pub fn load() -> Self {
        let mut cli = Cli::parse();
        let demo_env = match std::env::var("CANDLEWICK_DEMO") {
            Ok(v) => match v.trim() {
                "1" | "true" | "on" | "yes" => Some(true),
                "0" | "false" | "off" | "no" | "" => Some(false),
                other => {
                    use clap::CommandFactory;
                    Cli::command()
                        .error(
                            clap::error::ErrorKind::InvalidValue,
                            format!(
                                "invalid value '{other}' for CANDLEWICK_DEMO (expected 1 or 0)"
                            ),
                        )
                        .exit()
                }
            },
            Err(_) => None,
        };
        cli.serve.demo_env = demo_env;
        if let Some(Command::Serve(s)) = &mut cli.command {
            s.demo_env = demo_env;
        }
        cli
    }
}

/// Browser origins allowed to open `/ws` besides the server's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins {
    any: bool,
    /// Lowercased `scheme://host[:port]`.
    origins: Vec<String>,
}

impl AllowedOrigins {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut allowed = Self::default();
        for o in s.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            if o == "*" {
                allowed.any = true;
                continue;
            }
            let u = url::Url::parse(o).map_err(|e| format!("'{o}' is not an origin ({e})"))?;
            if u.host_str().is_none() || u.path() != "/" || u.query().is_some() {
                return Err(format!(
                    "'{o}' is not an origin: give scheme://host[:port], like https://charts.example"
                ));
            }
            allowed
                .origins
                .push(u.origin().ascii_serialization().to_ascii_lowercase());
        }
        Ok(allowed)
    }

    /// Whether a browser's `Origin` header value is on the list.
    pub fn allows(&self, origin: &str) -> bool {
        self.any
            || url::Url::parse(origin).is_ok_and(|u| {
                let origin = u.origin().ascii_serialization().to_ascii_lowercase();
                self.origins.contains(&origin)
            })
    }
}

/// The shortest admin token taken: shorter ones are guessable despite the failure limit.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// Refuses an empty or short admin token, saying why without repeating it.
pub fn check_admin_token(token: &str) -> Result<(), String> {
    let chars = token.trim().chars().count();
    if chars == 0 {
        return Err(
            "the admin token (--admin-token / CANDLEWICK_ADMIN_TOKEN) is set but empty: \
             nobody could sign in; give one of at least 16 characters, or unset it to have one \
             generated into <data-dir>/admin-token"
                .into(),
        );
    }
    if chars < MIN_ADMIN_TOKEN_CHARS {
        return Err(format!(
            "the admin token (--admin-token / CANDLEWICK_ADMIN_TOKEN) has {chars} characters: \
             it must have at least {MIN_ADMIN_TOKEN_CHARS}, or it can be guessed; unset it to \
             have one generated into <data-dir>/admin-token"
        ));
    }
    Ok(())
}

fn parse_symbol(s: &str) -> Result<Symbol, String> {
    Symbol::parse(s).map_err(|e| e.to_string())
}

/// `1s`, `500ms`, `7d`; a bare number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return Err(format!("'{s}' is not a duration"));
        }
        Duration::from_secs_f64(secs)
    } else {
        humantime::parse_duration(s).map_err(|e| format!("'{s}' is not a duration ({e})"))?
    };
    if d.is_zero() {
        return Err("the duration must be greater than zero".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn allowed_origins_are_compared_by_scheme_host_and_port() {
        let allowed = AllowedOrigins::parse("https://Charts.example, http://localhost:3000")
            .expect("valid origins");
        assert!(allowed.allows("https://charts.example"));
        assert!(allowed.allows("https://charts.example:443"));
        assert!(allowed.allows("http://localhost:3000"));
        assert!(!allowed.allows("http://charts.example"));
        assert!(!allowed.allows("https://evil.example"));
        assert!(!allowed.allows("null"));
        assert!(
            AllowedOrigins::parse("*")
                .expect("any")
                .allows("https://evil.example")
        );
        assert!(AllowedOrigins::parse("not an origin").is_err());
        assert!(AllowedOrigins::parse("https://a.example/path").is_err());
    }

    #[test]
    fn empty_and_short_admin_tokens_are_refused_without_being_repeated() {
        for (bad, says) in [
            ("", "empty"),
            ("   ", "empty"),
            ("s3cret-but-15ch", "15 characters"),
        ] {
            let e = check_admin_token(bad).expect_err(bad);
            assert!(e.contains(says), "{bad:?}: {e}");
            assert!(bad.trim().is_empty() || !e.contains(bad), "{e}");
        }
        assert!(check_admin_token("test-admin-token").is_ok());
    }

    #[test]
    fn the_resume_grace_is_a_setting_of_its_own() {
        use clap::Parser;
        let serve = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("candlewick").chain(args.iter().copied()))
                .expect("valid settings")
                .serve
        };
        assert_eq!(serve(&[]).resume_grace, Duration::from_secs(60));
        let s = serve(&["--keep-unwatched", "10s", "--resume-grace", "5m"]);
        assert_eq!(s.keep_unwatched, Duration::from_secs(10));
        assert_eq!(s.resume_grace, Duration::from_secs(300));
    }

    #[test]
    fn zero_and_garbage_durations_are_rejected() {
        for bad in ["0s", "0", "-1", "soon", ""] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}

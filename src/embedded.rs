//! The embedded PostgreSQL cluster: found on this machine, created under the data dir on first
//! start, run on loopback with a generated password, stopped with the server.
//!
//! PostgreSQL refuses to run as root, so as root the cluster runs as the unprivileged `postgres`
//! user. When that user cannot reach the data dir (a checkout under `/root`, mode 0700), the
//! cluster lives under [`RELOCATED_ROOT`] and `<data-dir>/postgres` is a symlink to it.

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User};
use secrecy::{ExposeSecret, SecretString};

/// Where clusters go when the unprivileged user cannot reach the data dir.
pub const RELOCATED_ROOT: &str = "/var/lib/candlewick/clusters";
/// The superuser and database the server uses.
pub const DB_USER: &str = "candlewick";
pub const DB_NAME: &str = "candlewick";
/// How long a fresh or recovering cluster may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a fast shutdown may take before the cluster is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Trade durability for speed (tests): no fsync at initdb or at run time.
    pub unsafe_fast: bool,
    /// Listen on this port instead of a free one (a restarted cluster keeps its URL).
    pub port: Option<u16>,
    /// Preload TimescaleDB when it is installed with these server binaries, so the
    /// migrations make `ticks` a hypertable and `one_min_candle` a continuous aggregate.
    pub timescaledb: bool,
    /// Further libraries to preload (the bench's `pg_stat_statements`).
    pub preload: Vec<String>,
}

/// A running cluster; stopped by [`EmbeddedPostgres::stop`] or, as a last resort, on drop.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    pid: Pid,
    port: u16,
    password: SecretString,
    keeper: Option<JoinHandle<()>>,
    exited: Arc<Mutex<bool>>,
    cluster_dir: PathBuf,
    /// The cluster runs with TimescaleDB in `shared_preload_libraries`.
    timescaledb: bool,
    /// Held while the cluster runs: a second server on the same data dir is refused.
    _lock: fs::File,
}

impl EmbeddedPostgres {
    /// Finds the binaries, creates the cluster if needed, starts it and waits until it answers.
    /// Blocking: call it from a blocking context.
    pub fn start(data_dir: &Path, options: &Options) -> anyhow::Result<Self> {
        let bin = find_bindir()?;
        fs::create_dir_all(data_dir)
            .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
        let data_dir = data_dir.canonicalize().context("resolving the data dir")?;
        let run_as = RunAs::current()?;
        let lock = lock_data_dir(&data_dir)?;
        let cluster_dir = cluster_dir(&data_dir, &run_as)?;
        run_as.fix_ownership(&cluster_dir)?;
        let password = crate::secrets::load_or_create(&data_dir.join("db-password"), 32)?;

        if !cluster_dir.join("PG_VERSION").exists() {
            init_cluster(&bin, &cluster_dir, &run_as, &password, options)?;
        }
        stop_leftover(&cluster_dir)?;

        let log_path = data_dir.join("postgres.log");
        let timescaledb = options.timescaledb && timescaledb_installed(&bin);
        let mut preload = options.preload.clone();
        if timescaledb {
            preload.insert(0, "timescaledb".into());
        }
        let mut last_err = None;
        // A free port can be taken between our probe and postgres' bind: try a few.
        for _ in 0..3 {
            let port = match options.port {
                Some(p) => p,
                None => free_port()?,
            };
            match Self::launch(
                &bin,
                &cluster_dir,
                &run_as,
                port,
                &log_path,
                options,
                &preload,
            ) {
                Ok((pid, keeper, exited)) => {
                    let pg = Self {
                        pid,
                        port,
                        password: password.clone(),
                        keeper: Some(keeper),
                        exited,
                        cluster_dir: cluster_dir.clone(),
                        timescaledb,
                        _lock: lock.try_clone().context("sharing the data dir lock")?,
                    };
                    match pg.wait_ready(&bin, &log_path) {
                        Ok(()) => return Ok(pg),
                        Err(e) => {
                            last_err = Some(e);
                            drop(pg);
                        }
                    }
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("the embedded PostgreSQL did not start")))
    }

    /// Runs `postgres` from a keeper thread that lives exactly as long as the child: the child
    /// gets SIGINT (fast shutdown) when that thread dies, so even `kill -9` of the server stops it.
    #[allow(clippy::type_complexity)]
    fn launch(
        bin: &Path,
        cluster_dir: &Path,
        run_as: &RunAs,
        port: u16,
        log_path: &Path,
        options: &Options,
        preload: &[String],
    ) -> anyhow::Result<(Pid, JoinHandle<()>, Arc<Mutex<bool>>)> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(cluster_dir)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            .args(["-c", "max_connections=300"])
            .args(["-c", "max_locks_per_transaction=256"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating the log handle")?)
            .stderr(log);
        if !preload.is_empty() {
            cmd.arg("-c")
                .arg(format!("shared_preload_libraries={}", preload.join(",")));
        }
        if preload.iter().any(|l| l == "timescaledb") {
            // The embedded cluster never phones home, and runs no TimescaleDB job scheduler:
            // candlewick refreshes the aggregate itself (its poller does what the refresh
            // policy would), and the scheduler's jobs fail on some PostgreSQL releases
            // (TimescaleDB 2.27 on PostgreSQL 15.20: `cannot drop portal ""`).
            cmd.args(["-c", "timescaledb.telemetry_level=off"]);
            cmd.args(["-c", "timescaledb.max_background_workers=0"]);
        }
        if options.unsafe_fast {
            cmd.args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        }
        run_as.apply(&mut cmd);
        set_parent_death_signal(&mut cmd);

        let (tx, rx) = std::sync::mpsc::channel();
        let exited = Arc::new(Mutex::new(false));
        let exited_in_keeper = exited.clone();
        let keeper = std::thread::Builder::new()
            .name("embedded-postgres".into())
            .spawn(move || {
                let mut child = match cmd.spawn() {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(child.id()));
                let status = child.wait();
                tracing::info!(?status, "embedded PostgreSQL exited");
                if let Ok(mut e) = exited_in_keeper.lock() {
                    *e = true;
                }
            })
            .context("spawning the PostgreSQL keeper thread")?;
        let pid = rx
            .recv()
            .context("the PostgreSQL keeper thread ended early")?
            .with_context(|| format!("running {}", bin.join("postgres").display()))?;
        let pid = Pid::from_raw(i32::try_from(pid).context("pid out of range")?);
        Ok((pid, keeper, exited))
    }

    fn has_exited(&self) -> bool {
        self.exited.lock().map(|e| *e).unwrap_or(true)
    }

    fn wait_ready(&self, bin: &Path, log_path: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let isready = bin.join("pg_isready");
        loop {
            if self.has_exited() {
                bail!(
                    "the embedded PostgreSQL exited during start-up; its log ({}) ends with:\n{}",
                    log_path.display(),
                    tail(log_path, 10)
                );
            }
            let up = if isready.exists() {
                Command::new(&isready)
                    .args([
                        "-q",
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &self.port.to_string(),
                        "-d",
                        "postgres",
                    ])
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
            } else {
                TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok()
            };
            if up {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the embedded PostgreSQL did not accept connections within {READY_TIMEOUT:?}; see {}",
                    log_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `database`, password included.
    pub fn url(&self, database: &str) -> SecretString {
        format!(
            "postgres://{DB_USER}:{}@127.0.0.1:{}/{database}",
            self.password.expose_secret(),
            self.port
        )
        .into()
    }

    /// The same URL without the password, for logs and users (the password is in `db-password`).
    pub fn display_url(&self, database: &str) -> String {
        format!("postgres://{DB_USER}@127.0.0.1:{}/{database}", self.port)
    }

    pub fn cluster_dir(&self) -> &Path {
        &self.cluster_dir
    }

    /// Whether TimescaleDB is preloaded (asked for, and installed).
    pub fn timescaledb(&self) -> bool {
        self.timescaledb
    }

    /// Fast shutdown: disconnects clients, checkpoints, exits.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> anyhow::Result<()> {
        let Some(keeper) = self.keeper.take() else {
            return Ok(());
        };
        if !self.has_exited() {
            let _ = kill(self.pid, Signal::SIGINT);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while !self.has_exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if !self.has_exited() {
            tracing::warn!(
                "the embedded PostgreSQL did not stop within {STOP_TIMEOUT:?}; killing it"
            );
            let _ = kill(self.pid, Signal::SIGKILL);
        }
        keeper
            .join()
            .map_err(|_| anyhow::anyhow!("the PostgreSQL keeper thread panicked"))
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner() {
            tracing::warn!(error = %e, "stopping the embedded PostgreSQL");
        }
    }
}

/// Makes the child receive SIGINT when the spawning (keeper) thread dies.
#[allow(unsafe_code)]
fn set_parent_death_signal(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent; the closure runs
    // after setuid, which would otherwise clear the death signal.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGINT).map_err(std::io::Error::from)
        });
    }
}

/// The user PostgreSQL runs as: ourselves, or `postgres` when we are root.
#[derive(Debug, Clone)]
struct RunAs {
    /// `Some` when privileges must be dropped.
    user: Option<User>,
}

impl RunAs {
    fn current() -> anyhow::Result<Self> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(Self { user: None });
        }
        let user = User::from_name("postgres")
            .context("looking up the postgres user")?
            .context(
                "running as root, and there is no 'postgres' user to run PostgreSQL as \
                 (install the postgresql package, run as another user, or set DATABASE_URL)",
            )?;
        Ok(Self { user: Some(user) })
    }

    fn apply(&self, cmd: &mut Command) {
        if let Some(u) = &self.user {
            cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
            cmd.env("HOME", &u.dir).env("USER", &u.name);
        }
    }

    fn chown(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(u) = &self.user {
            std::os::unix::fs::chown(path, Some(u.uid.as_raw()), Some(u.gid.as_raw()))
                .with_context(|| format!("giving {} to {}", path.display(), u.name))?;
        }
        Ok(())
    }

    /// Gives `dir` and everything in it to this user when it belongs to someone else (a cluster
    /// copied or restored by root, or created by an earlier run as another user).
    fn fix_ownership(&self, dir: &Path) -> anyhow::Result<()> {
        let Some(u) = &self.user else { return Ok(()) };
        // The directory itself may have just been given over; its contents tell.
        let owned = [
            dir.to_path_buf(),
            dir.join("PG_VERSION"),
            dir.join("global"),
        ]
        .iter()
        .filter_map(|p| fs::symlink_metadata(p).ok())
        .all(|m| m.uid() == u.uid.as_raw());
        if owned {
            return Ok(());
        }
        tracing::info!("giving {} to {}", dir.display(), u.name);
        let mut pending = vec![dir.to_path_buf()];
        while let Some(p) = pending.pop() {
            std::os::unix::fs::lchown(&p, Some(u.uid.as_raw()), Some(u.gid.as_raw()))
                .with_context(|| format!("giving {} to {}", p.display(), u.name))?;
            if fs::symlink_metadata(&p)?.is_dir() {
                for entry in fs::read_dir(&p)? {
                    pending.push(entry?.path());
                }
            }
        }
        Ok(())
    }

    /// Whether this user can walk into `dir` (search permission on it and every ancestor).
    fn can_reach(&self, dir: &Path) -> bool {
        let Some(u) = &self.user else { return true };
        let groups = nix::unistd::getgrouplist(
            &std::ffi::CString::new(u.name.as_str()).unwrap_or_default(),
            u.gid,
        )
        .unwrap_or_else(|_| vec![u.gid]);
        dir.ancestors().all(|p| match fs::metadata(p) {
            Ok(m) => {
                let mode = m.mode();
                if m.uid() == u.uid.as_raw() {
                    mode & 0o100 != 0
                } else if groups.iter().any(|g| g.as_raw() == m.gid()) {
                    mode & 0o010 != 0
                } else {
                    mode & 0o001 != 0
                }
            }
            Err(_) => false,
        })
    }
}

/// `<data-dir>/postgres`, or a reachable place it links to.
fn cluster_dir(data_dir: &Path, run_as: &RunAs) -> anyhow::Result<PathBuf> {
    let link = data_dir.join("postgres");
    if let Ok(target) = fs::read_link(&link) {
        return Ok(target);
    }
    if run_as.can_reach(data_dir) {
        if !link.exists() {
            fs::create_dir(&link).with_context(|| format!("creating {}", link.display()))?;
        }
        run_as.chown(&link)?;
        fs::set_permissions(&link, fs::Permissions::from_mode(0o700))?;
        return Ok(link);
    }
    // Keep the data dir private: the cluster goes to a reachable place, linked from the data dir.
    let name = data_dir.to_string_lossy();
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let target = Path::new(RELOCATED_ROOT).join(format!("{hash:016x}"));
    fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    fs::set_permissions(Path::new(RELOCATED_ROOT), fs::Permissions::from_mode(0o755))?;
    run_as.chown(&target)?;
    fs::set_permissions(&target, fs::Permissions::from_mode(0o700))?;
    std::os::unix::fs::symlink(&target, &link)
        .with_context(|| format!("linking {}", link.display()))?;
    tracing::info!(
        "the postgres user cannot reach {}: the cluster lives in {} (linked from {})",
        data_dir.display(),
        target.display(),
        link.display()
    );
    Ok(target)
}

fn init_cluster(
    bin: &Path,
    cluster_dir: &Path,
    run_as: &RunAs,
    password: &SecretString,
    options: &Options,
) -> anyhow::Result<()> {
    tracing::info!(
        "creating the embedded PostgreSQL cluster in {}",
        cluster_dir.display()
    );
    // initdb wants an empty directory; a half-made cluster from an interrupted start is removed.
    for entry in fs::read_dir(cluster_dir)? {
        let p = entry?.path();
        if p.is_dir() {
            fs::remove_dir_all(&p)?
        } else {
            fs::remove_file(&p)?
        }
    }
    // The password file must be readable by the postgres user: a private temp file it owns,
    // named apart from any other cluster this process creates at the same time.
    let pwfile = tempfile::Builder::new()
        .prefix("candlewick-pw-")
        .tempfile()
        .context("creating the initdb password file")?;
    fs::set_permissions(pwfile.path(), fs::Permissions::from_mode(0o600))
        .context("restricting the initdb password file")?;
    writeln!(pwfile.as_file(), "{}", password.expose_secret())
        .context("writing the initdb password file")?;
    run_as.chown(pwfile.path())?;
    let pwfile = pwfile.into_temp_path();
    let mut cmd = Command::new(bin.join("initdb"));
    cmd.arg("-D")
        .arg(cluster_dir)
        .args([
            "-U",
            DB_USER,
            "-E",
            "UTF8",
            "--no-locale",
            "--auth=scram-sha-256",
            "--no-instructions",
        ])
        .arg(format!("--pwfile={}", pwfile.display()));
    if options.unsafe_fast {
        cmd.arg("--no-sync");
    }
    run_as.apply(&mut cmd);
    let out = cmd
        .output()
        .with_context(|| format!("running {}", bin.join("initdb").display()));
    drop(pwfile); // deletes it
    let out = out?;
    if !out.status.success() {
        bail!(
            "initdb failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Stops a cluster left running by a server that died. Only called while holding the data
/// dir's lock, so any postmaster found here has no live owner.
fn stop_leftover(cluster_dir: &Path) -> anyhow::Result<()> {
    let pid_file = cluster_dir.join("postmaster.pid");
    let Some(Postmaster { pid, .. }) = running_postmaster(cluster_dir) else {
        if pid_file.exists() {
            // Nobody (or an unrelated process that reused the pid): postgres would refuse to start.
            tracing::info!("removing the stale {}", pid_file.display());
            let _ = fs::remove_file(&pid_file);
        }
        return Ok(());
    };
    // Its keeper thread died with the old server and sent SIGINT; sending it again is harmless.
    tracing::warn!(%pid, "an earlier embedded PostgreSQL is still running; stopping it");
    let _ = kill(pid, Signal::SIGINT);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while kill(pid, None).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if kill(pid, None).is_ok() {
        let _ = kill(pid, Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

/// Takes `<data-dir>/postgres.lock` for as long as the returned file lives; the kernel releases
/// it when the process dies, however it dies.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<fs::File> {
    let path = data_dir.join("postgres.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => bail!(
            "the embedded PostgreSQL in {} is in use by another candlewick process; \
             stop it first, or use another --data-dir",
            data_dir.display()
        ),
        Err(fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// A live postmaster as its cluster's `postmaster.pid` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Postmaster {
    pub pid: Pid,
    /// The TCP port it listens on (the file's fourth line).
    pub port: Option<u16>,
}

/// The live postmaster of `cluster_dir`, from its `postmaster.pid`; `None` when the file is
/// missing or names a process that is gone (or is not postgres: its pid was reused).
pub fn running_postmaster(cluster_dir: &Path) -> Option<Postmaster> {
    let text = fs::read_to_string(cluster_dir.join("postmaster.pid")).ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse::<i32>().ok()?;
    let port = lines.nth(2).and_then(|l| l.trim().parse::<u16>().ok());
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains("postgres")
        .then(|| Postmaster {
            pid: Pid::from_raw(pid),
            port,
        })
}

/// The URL of the embedded cluster under `data_dir` while another process runs it (a server
/// started on that data dir): its `postmaster.pid` names the port, `db-password` the password.
pub fn running_cluster_url(data_dir: &Path) -> Option<SecretString> {
    let port = running_postmaster(&data_dir.join("postgres"))?.port?;
    let password = fs::read_to_string(data_dir.join("db-password")).ok()?;
    let mut url = url::Url::parse("postgres://127.0.0.1/").ok()?;
    url.set_username(DB_USER).ok()?;
    url.set_password(Some(password.trim())).ok()?;
    url.set_port(Some(port)).ok()?;
    url.set_path(DB_NAME);
    Some(url.to_string().into())
}

/// The PostgreSQL server binaries: `pg_config --bindir`, the newest `/usr/lib/postgresql/*/bin`,
/// then `PATH`.
pub fn find_bindir() -> anyhow::Result<PathBuf> {
    let has_server = |d: &Path| d.join("postgres").is_file() && d.join("initdb").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_server(&d) {
            return Ok(d);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let d = e.path().join("bin");
            has_server(&d).then_some((v, d))
        })
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return Ok(d);
    }
    if let Some(d) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|d| has_server(d))
    {
        return Ok(d);
    }
    bail!(
        "no PostgreSQL server binaries found (looked at `pg_config --bindir`, /usr/lib/postgresql/*/bin and PATH). \
         Install them (Debian/Ubuntu: `apt-get install postgresql`) or point DATABASE_URL at an existing server."
    )
}

/// Whether the TimescaleDB extension is installed for the server in `bindir`: its loader
/// library in the server's library dir (`../lib`, as Debian and source builds lay it out, or
/// what `pg_config --pkglibdir` names) and its control file.
pub fn timescaledb_installed(bindir: &Path) -> bool {
    let mut libdirs = vec![bindir.join("../lib")];
    if let Ok(out) = Command::new(bindir.join("pg_config"))
        .arg("--pkglibdir")
        .output()
        && out.status.success()
    {
        libdirs.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    let mut sharedirs = vec![bindir.join("../share/extension")];
    if let Ok(out) = Command::new(bindir.join("pg_config"))
        .arg("--sharedir")
        .output()
        && out.status.success()
    {
        sharedirs
            .push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("extension"));
    }
    // Debian keeps the control files apart: /usr/share/postgresql/<major>/extension.
    if let Some(major) = bindir
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|m| m.to_str())
    {
        sharedirs.push(PathBuf::from(format!(
            "/usr/share/postgresql/{major}/extension"
        )));
    }
    libdirs.iter().any(|d| d.join("timescaledb.so").is_file())
        && sharedirs
            .iter()
            .any(|d| d.join("timescaledb.control").is_file())
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

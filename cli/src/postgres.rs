//! The private PostgreSQL cluster of `safra up` when no `DATABASE_URL` is
//! given: created in `$SAFRA_HOME/pg` from the system's server binaries, kept
//! between runs, listening on loopback only.
//!
//! PostgreSQL refuses to run as root, and these machines run as root: the
//! cluster then belongs to the `postgres` user and every command runs through
//! `runuser -u postgres`. That user cannot enter a private home such as
//! `/root` or a `mktemp -d` folder, so there the cluster's files live in
//! [`RELOCATED_CLUSTERS`] (one folder per `SAFRA_HOME`, named by a hash of
//! its path) and `$SAFRA_HOME/pg` is a link to them.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use tokio::process::Command;

/// Where clusters go when the postgres user cannot reach `$SAFRA_HOME`.
pub const RELOCATED_CLUSTERS: &str = "/var/lib/safra/clusters";

/// A cluster `safra up` uses, and whether this run started it.
#[derive(Debug)]
pub struct PrivateCluster {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    port: u16,
    started_here: bool,
}

impl PrivateCluster {
    /// Creates the cluster in `root` if it does not exist, and starts it on
    /// `port` unless it already runs.
    pub async fn ensure(root: &Path, port: u16) -> anyhow::Result<Self> {
        let bin_dir = server_bin_dir()?;
        let root = &reachable_root(root)?;
        let data_dir = root.join("data");
        let mut cluster = Self {
            bin_dir,
            data_dir,
            port,
            started_here: false,
        };
        if !cluster.data_dir.join("PG_VERSION").exists() {
            cluster.init().await?;
        }
        if !cluster.is_running().await {
            cluster.start(root).await?;
            cluster.started_here = true;
        }
        Ok(cluster)
    }

    /// The URL of the cluster's maintenance database.
    pub fn server_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the cluster if this run started it and it still runs (a Ctrl-C
    /// at the terminal may have reached the server too).
    pub async fn stop_if_started_here(&self) -> anyhow::Result<()> {
        if self.started_here && self.is_running().await {
            self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "60"])
                .await
                .context("stopping the private PostgreSQL")?;
        }
        Ok(())
    }

    async fn init(&self) -> anyhow::Result<()> {
        let initdb = self.bin_dir.join("initdb");
        let data = self.data_dir.display().to_string();
        run(as_postgres(
            &initdb,
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ],
        ))
        .await
        .context("initdb of the private PostgreSQL")
    }

    async fn is_running(&self) -> bool {
        self.pg_ctl(&["status"]).await.is_ok()
    }

    async fn start(&self, root: &Path) -> anyhow::Result<()> {
        let log = root.join("postgres.log").display().to_string();
        // Loopback TCP only; no Unix socket, so the path length limit of
        // socket files never bites and nothing clashes with a system cluster.
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories=''",
            self.port
        );
        self.pg_ctl(&["start", "-w", "-t", "60", "-l", &log, "-o", &options])
            .await
            .with_context(|| {
                format!(
                    "starting the private PostgreSQL on port {} (log: {log})",
                    self.port
                )
            })
    }

    async fn pg_ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let data = self.data_dir.display().to_string();
        let mut full = vec!["-D", data.as_str()];
        full.extend_from_slice(args);
        run(as_postgres(&self.bin_dir.join("pg_ctl"), &full)).await
    }
}

/// The folder of `initdb`, `pg_ctl` and `postgres`: `pg_config --bindir`,
/// else the newest `/usr/lib/postgresql/<major>/bin`.
fn server_bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(output) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut majors: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    majors.sort();
    match majors.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "no PostgreSQL server binaries found (initdb, pg_ctl): install the postgresql package (scripts/up does) or set DATABASE_URL to a running server"
        ),
    }
}

fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

/// The folder the cluster's files live in: `root` itself, or (as root,
/// when the postgres user cannot enter it) a folder of its own under
/// [`RELOCATED_CLUSTERS`] that `root` then links to. Created and handed to
/// the postgres user either way.
fn reachable_root(root: &Path) -> anyhow::Result<PathBuf> {
    if let Ok(target) = fs::read_link(root) {
        // Relocated by an earlier run.
        return Ok(target);
    }
    fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    if !running_as_root() {
        return Ok(root.to_path_buf());
    }
    hand_to_postgres_user(root)?;
    if postgres_can_write(root) {
        return Ok(root.to_path_buf());
    }
    let canonical = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    let name: String = digest
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let relocated = Path::new(RELOCATED_CLUSTERS).join(name);
    let unreachable = || {
        format!(
            "the postgres user cannot enter {} (PostgreSQL does not run as root) nor use {}: set SAFRA_HOME to a folder it can enter, or DATABASE_URL to a running server",
            root.display(),
            relocated.display()
        )
    };
    fs::create_dir_all(&relocated).with_context(unreachable)?;
    hand_to_postgres_user(&relocated)?;
    if !postgres_can_write(&relocated) {
        bail!(unreachable());
    }
    // Only an empty folder (made just now) gives way to the link.
    fs::remove_dir(root).with_context(unreachable)?;
    std::os::unix::fs::symlink(&relocated, root).with_context(unreachable)?;
    Ok(relocated)
}

/// Whether the postgres user can create files in `dir` (every folder above
/// it must let that user through).
fn postgres_can_write(dir: &Path) -> bool {
    std::process::Command::new("runuser")
        .args(["-u", "postgres", "--", "test", "-w"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// As root, the cluster's folder must belong to `postgres`.
fn hand_to_postgres_user(root: &Path) -> anyhow::Result<()> {
    if !running_as_root() {
        return Ok(());
    }
    let status = std::process::Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(root)
        .status()
        .context("running chown")?;
    if !status.success() {
        bail!("cannot hand {} to the postgres user", root.display());
    }
    Ok(())
}

fn as_postgres(program: &Path, args: &[&str]) -> Command {
    let mut command = if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    };
    command.args(args);
    // The postgres user may not be able to enter our working directory
    // (a clone under /root); every path handed over is absolute.
    command.current_dir("/");
    command
}

/// Runs `command`, turning a failure into an error carrying the last lines
/// of its output.
async fn run(mut command: Command) -> anyhow::Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {:?}", command.as_std().get_program()))?;
    if output.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&output.stderr);
    let last = text
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("");
    bail!("{} ({last})", output.status)
}

//! PostgreSQL over TLS as a managed database asks for it: a cluster of the
//! test's own (`ssl = on`, a server certificate from a test CA, listening
//! on 127.0.0.1 and 127.0.0.2), reached by the pool and by the migrations
//! with each `sslmode`, and refused where the certificate does not fit.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use diesel::{QueryableByName, sql_types::Bool};
use diesel_async::RunQueryDsl;
use safra::{
    config::Secret,
    data::{
        db::{self, Database},
        statement::Statement,
    },
    identity::certs::CertDir,
};

#[derive(QueryableByName)]
struct Encrypted {
    #[diesel(sql_type = Bool)]
    ssl: bool,
}

fn as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

/// The system's initdb and pg_ctl.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries in /usr/lib/postgresql")
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().expect("an initdb")
}

/// Runs `program` as the postgres user when we are root (PostgreSQL
/// refuses to run as root).
fn postgres_command(program: &Path) -> Command {
    if as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command.current_dir("/");
        command
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// A TLS-enabled cluster, stopped when dropped.
struct TlsCluster {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    ca: PathBuf,
    /// A CA that did not sign the server's certificate.
    stranger_ca: PathBuf,
}

impl TlsCluster {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("folder");
        let certs = CertDir::new(dir.path().join("certs"));
        certs.init().expect("a CA and leaves");
        certs
            .issue("postgres", Duration::from_secs(3600))
            .expect("the server's certificate (SANs postgres, localhost, 127.0.0.1)");
        let stranger = CertDir::new(dir.path().join("stranger"));
        stranger.init().expect("another CA");
        let data = dir.path().join("data");
        let bin = bin_dir();
        if as_root() {
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            Command::new("chmod")
                .arg("755")
                .arg(dir.path())
                .status()
                .expect("chmod");
        }
        let status = postgres_command(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(status.success(), "initdb");
        // The server's key and certificate, readable by the server only.
        for (from, to) in [
            (certs.leaf_cert("postgres"), "server.crt"),
            (certs.leaf_key("postgres"), "server.key"),
        ] {
            std::fs::copy(&from, data.join(to)).expect("copy");
        }
        if as_root() {
            Command::new("chown")
                .args(["postgres:postgres"])
                .arg(data.join("server.crt"))
                .arg(data.join("server.key"))
                .status()
                .expect("chown");
        }
        Command::new("chmod")
            .arg("600")
            .arg(data.join("server.key"))
            .status()
            .expect("chmod");
        let port = free_port();
        let status = postgres_command(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-w")
            .arg("-l")
            .arg(data.join("server.log"))
            .arg("-o")
            .arg(format!(
                "-c listen_addresses=127.0.0.1,127.0.0.2 -p {port} -c unix_socket_directories='' -c ssl=on"
            ))
            .arg("start")
            .stdout(std::process::Stdio::null())
            .status()
            .expect("pg_ctl runs");
        assert!(status.success(), "the TLS cluster starts");
        Self {
            ca: certs.ca_cert(),
            stranger_ca: stranger.ca_cert(),
            _dir: dir,
            data,
            bin,
            port,
        }
    }

    fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        postgres_command(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .status()
            .ok();
    }
}

/// Whether the pool's connection to `url` is encrypted (it connects).
async fn encrypted(url: &str) -> Result<bool, db::DbError> {
    let database = Database::connect(&safra::config::DatabaseConfig {
        url: Secret::new(url),
        pool_size: 1,
        acquire_timeout_ms: 5_000,
        statement_timeout_ms: 5_000,
        prepared_statements: true,
    })
    .await?;
    let mut conn = database.connection().await?;
    let rows: Vec<Encrypted> =
        Statement::new("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .load(&mut conn)
            .await?;
    Ok(<[Encrypted]>::first(&rows).is_some_and(|row| row.ssl))
}

#[tokio::test]
async fn each_sslmode_reaches_a_tls_cluster_as_libpq_would() {
    let cluster = TlsCluster::start();
    let root = format!("sslrootcert={}", cluster.ca.display());

    // verify-full: the chain and the name (127.0.0.1 is in the certificate).
    let full = cluster.url("127.0.0.1", &format!("sslmode=verify-full&{root}"));
    assert!(encrypted(&full).await.expect("verify-full connects"));
    // The migrations connect the same way.
    db::migrate_up(&Secret::new(full.clone()), &safra_notifications::MIGRATIONS)
        .await
        .expect("migrations over TLS");

    // require without a CA: encrypted, nothing checked.
    let require = cluster.url("127.0.0.1", "sslmode=require");
    assert!(encrypted(&require).await.expect("require connects"));

    // 127.0.0.2 is not a name in the certificate: verify-ca does not
    // compare names, verify-full does.
    let other_name = cluster.url("127.0.0.2", &format!("sslmode=verify-ca&{root}"));
    assert!(encrypted(&other_name).await.expect("verify-ca connects"));
    let wrong_name = cluster.url("127.0.0.2", &format!("sslmode=verify-full&{root}"));
    let refused = encrypted(&wrong_name)
        .await
        .expect_err("the name does not fit");
    assert!(
        refused.to_string().contains("certificate"),
        "a clear refusal: {refused}"
    );

    // A certificate from another CA is refused, even by require with that
    // CA named (libpq then checks the chain).
    let stranger = format!("sslrootcert={}", cluster.stranger_ca.display());
    for mode in ["verify-full", "verify-ca", "require"] {
        let url = cluster.url("127.0.0.1", &format!("sslmode={mode}&{stranger}"));
        let refused = encrypted(&url).await.expect_err("another CA's certificate");
        assert!(
            refused.to_string().contains("certificate"),
            "{mode}: a clear refusal: {refused}"
        );
    }

    // Without sslmode, as before: plain.
    let plain = cluster.url("127.0.0.1", "application_name=plain");
    assert!(!encrypted(&plain).await.expect("plain connects"));
}

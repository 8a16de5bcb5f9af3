//! `safra up`: the whole mesh on this machine.
//!
//! It prepares `$SAFRA_HOME`, finds PostgreSQL (the server at `DATABASE_URL`,
//! else a private cluster in `$SAFRA_HOME/pg`), creates and migrates each
//! service database, makes the development certificates when they are
//! missing, then starts every service and the gateway as child
//! processes of this same binary (`safra serve <name>`), each logging to
//! `$SAFRA_HOME/logs/<name>.log`. Once every service's own admin `/readyz`
//! and the gateway's `/healthz` answer 200 it prints `safra is up: <url>`. Ctrl-C or SIGTERM stop everything, draining
//! in-flight calls; a child that dies stops the mesh with its last log line.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use safra::{
    config::{Environment, Reader},
    data::db,
    mesh::{self, Service},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    process::{Child, Command},
};

use crate::{catalogue, postgres::PrivateCluster, shutdown};

/// How long `up` waits for `/readyz` before giving up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a child may take to drain and exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Where everything listens, from the fixed defaults or their overrides.
struct Layout {
    home: PathBuf,
    gateway: SocketAddr,
    gateway_admin: SocketAddr,
    services: Vec<(Service, SocketAddr, SocketAddr)>,
    database_prefix: String,
    admin_email: String,
    admin_password: Option<safra::config::Secret>,
}

impl Layout {
    fn read(reader: Reader<'_>) -> anyhow::Result<Self> {
        let mut services = Vec::new();
        for service in Service::ALL {
            let name = service.env_name();
            services.push((
                service,
                reader.socket_addr_or(
                    &format!("SAFRA_{name}_LISTEN_ADDR"),
                    service.default_listen_addr(),
                )?,
                reader.socket_addr_or(
                    &format!("SAFRA_{name}_ADMIN_ADDR"),
                    service.default_admin_addr(),
                )?,
            ));
        }
        Ok(Self {
            home: safra::config::home(reader)?,
            gateway: reader.socket_addr_or("SAFRA_GATEWAY_ADDR", mesh::default_gateway_addr())?,
            gateway_admin: reader.socket_addr_or(
                "SAFRA_GATEWAY_ADMIN_ADDR",
                mesh::default_gateway_admin_addr(),
            )?,
            services,
            database_prefix: reader.string_or("SAFRA_DB_PREFIX", "safra")?,
            admin_email: reader.string_or("SAFRA_ADMIN_EMAIL", "admin@safra.local")?,
            admin_password: reader.optional_secret("SAFRA_ADMIN_PASSWORD")?,
        })
    }
}

/// A running child process and what it is.
struct Running {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// Runs the mesh until a stop signal or a child's death.
#[allow(
    clippy::print_stdout,
    reason = "the ready line is the command's output"
)]
pub async fn run() -> anyhow::Result<()> {
    let environment = Environment::load()?;
    let reader = Reader::new(&environment);
    let layout = Layout::read(reader)?;
    // A bad broker setting is one line here, not five in the services' logs.
    if safra::config::broker_url(reader)?.is_some() {
        let namespace = safra::config::broker_namespace(reader)?;
        eprintln!("safra: events travel through RabbitMQ (SAFRA_BROKER, namespace {namespace})");
    }
    let logs = layout.home.join("logs");
    std::fs::create_dir_all(&logs)
        .with_context(|| format!("SAFRA_HOME: cannot create {}", logs.display()))?;

    check_ports_free(&layout).await?;
    safra::identity::certs::CertDir::new(layout.home.join("certs"))
        .init()
        .context("making the development certificates in SAFRA_HOME/certs")?;
    let key_file = ensure_key_encryption_key(&layout.home.join("secrets"))?;

    let (server_url, cluster) = match reader.optional_secret("DATABASE_URL")? {
        Some(url) => (url.expose().to_owned(), None),
        None => {
            let port = reader.parse_or("SAFRA_PG_PORT", 5433_u16, "a port number")?;
            let cluster = PrivateCluster::ensure(&layout.home.join("pg"), port).await?;
            (cluster.server_url(), Some(cluster))
        }
    };

    let outcome = run_mesh(&layout, &server_url, &logs, &key_file).await;
    if let Some(cluster) = cluster {
        cluster.stop_if_started_here().await?;
    }
    outcome
}

#[allow(
    clippy::print_stdout,
    reason = "the ready line is the command's output"
)]
async fn run_mesh(
    layout: &Layout,
    server_url: &str,
    logs: &Path,
    key_file: &Path,
) -> anyhow::Result<()> {
    prepare_databases(layout, server_url).await?;
    bootstrap_admin(layout, server_url, key_file).await?;

    let mut running = Vec::new();
    let started = start_children(layout, server_url, logs, key_file, &mut running).await;
    let outcome = match started {
        Ok(()) => supervise(layout, &mut running).await,
        Err(error) => Err(error),
    };
    stop_children(&mut running).await;
    outcome
}

async fn prepare_databases(layout: &Layout, server_url: &str) -> anyhow::Result<()> {
    let mut conn = db::connect_once(server_url)
        .await
        .context("PostgreSQL (DATABASE_URL)")?;
    for service in Service::ALL {
        let name = service.database_name(&layout.database_prefix);
        db::create_database_if_missing(&mut conn, &name)
            .await
            .with_context(|| format!("creating database {name}"))?;
        let url = db::with_database(server_url, &name);
        db::migrate_up(
            &safra::config::Secret::new(url),
            catalogue::migrations(service),
        )
        .await
        .with_context(|| format!("migrating database {name}"))?;
    }
    // The PostgreSQL event bus, shared by the services as a broker is.
    let bus = bus_database(layout);
    db::create_database_if_missing(&mut conn, &bus)
        .await
        .with_context(|| format!("creating database {bus}"))?;
    db::migrate_up(
        &safra::config::Secret::new(db::with_database(server_url, &bus)),
        &safra::bus::MIGRATIONS,
    )
    .await
    .with_context(|| format!("migrating database {bus}"))?;
    Ok(())
}

/// The event bus's database on the server: `<prefix>_events`.
fn bus_database(layout: &Layout) -> String {
    format!("{}_events", layout.database_prefix)
}

/// Makes the first admin from `SAFRA_ADMIN_EMAIL` (default
/// `admin@safra.local`) and `SAFRA_ADMIN_PASSWORD`; without a password one
/// is generated and shown once, on stderr.
#[allow(
    clippy::print_stderr,
    reason = "the generated password is shown once, to the operator"
)]
async fn bootstrap_admin(layout: &Layout, server_url: &str, key_file: &Path) -> anyhow::Result<()> {
    let mut source = std::collections::HashMap::new();
    source.insert(
        "SAFRA_ACCOUNTS_DATABASE_URL".to_owned(),
        db::with_database(
            server_url,
            &Service::Accounts.database_name(&layout.database_prefix),
        ),
    );
    source.insert(
        "SAFRA_KEY_ENCRYPTION_KEY".to_owned(),
        std::fs::read_to_string(key_file).context("reading the key-encryption key")?,
    );
    let accounts = crate::keys::open(Reader::new(&source)).await?;
    let generated = layout.admin_password.is_none();
    let password = match &layout.admin_password {
        Some(password) => password.expose().to_owned(),
        None => generate_password()?,
    };
    let made = accounts
        .ensure_admin(&layout.admin_email, &password)
        .await
        .context("SAFRA_ADMIN_EMAIL / SAFRA_ADMIN_PASSWORD")?;
    if made && generated {
        eprintln!(
            "safra: first admin {} created with password {password} (shown once; set SAFRA_ADMIN_PASSWORD to choose it)",
            layout.admin_email
        );
    }
    Ok(())
}

/// 18 random bytes as base64url: 24 characters.
fn generate_password() -> anyhow::Result<String> {
    use base64::Engine;
    let mut bytes = [0_u8; 18];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow::anyhow!("no randomness for the admin password"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The key that seals the accounts service's signing keys, made once in
/// `$SAFRA_HOME/secrets` (mode 0600) and kept between runs.
fn ensure_key_encryption_key(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};

    use base64::Engine;

    let path = dir.join("key-encryption.key");
    if path.exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut key = [0_u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
        .map_err(|_| anyhow::anyhow!("no randomness for the key-encryption key"))?;
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(encoded.as_bytes())?;
    Ok(path)
}

/// Refuses to start when a port is taken, naming it: a clearer line than a
/// child's bind error.
async fn check_ports_free(layout: &Layout) -> anyhow::Result<()> {
    let mut wanted = vec![("gateway", layout.gateway)];
    wanted.extend(
        layout
            .services
            .iter()
            .map(|(service, addr, _)| (service.name(), *addr)),
    );
    for (name, addr) in wanted {
        TcpListener::bind(addr).await.with_context(|| {
            format!("{name} cannot listen on {addr} (is another safra up running?)")
        })?;
    }
    Ok(())
}

async fn start_children(
    layout: &Layout,
    server_url: &str,
    logs: &Path,
    key_file: &Path,
    running: &mut Vec<Running>,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the safra binary")?;
    for (service, listen, admin) in &layout.services {
        let mut command = Command::new(&exe);
        command
            .args(["serve", service.name()])
            .env("SAFRA_HOME", &layout.home)
            .env("SAFRA_LISTEN_ADDR", listen.to_string())
            .env("SAFRA_ADMIN_ADDR", admin.to_string())
            .env(
                "DATABASE_URL",
                db::with_database(server_url, &service.database_name(&layout.database_prefix)),
            );
        if *service == Service::Accounts {
            command.env("SAFRA_KEY_ENCRYPTION_KEY_FILE", key_file);
        }
        command.env(
            "SAFRA_BUS_DATABASE_URL",
            db::with_database(server_url, &bus_database(layout)),
        );
        // Every peer where this run placed it (the JWKS comes from accounts).
        for (peer, peer_listen, _) in &layout.services {
            command.env(
                format!("SAFRA_{}_URL", peer.env_name()),
                format!("https://{peer_listen}"),
            );
        }
        running.push(spawn(service.name(), command, logs)?);
    }
    let mut gateway = Command::new(&exe);
    gateway
        .args(["serve", "gateway"])
        .env("SAFRA_HOME", &layout.home)
        .env("SAFRA_LISTEN_ADDR", layout.gateway.to_string())
        .env("SAFRA_GATEWAY_ADMIN_ADDR", layout.gateway_admin.to_string())
        .env_remove("DATABASE_URL");
    for (service, listen, _) in &layout.services {
        gateway.env(
            format!("SAFRA_{}_URL", service.env_name()),
            format!("https://{listen}"),
        );
    }
    running.push(spawn("gateway", gateway, logs)?);
    Ok(())
}

fn spawn(name: &'static str, mut command: Command, logs: &Path) -> anyhow::Result<Running> {
    let log = logs.join(format!("{name}.log"));
    let file =
        std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = file.try_clone().context("cannot share the log file")?;
    let child = command
        .env(shutdown::EXIT_ON_STDIN_EOF, "1")
        .stdin(Stdio::piped())
        .stdout(file)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    Ok(Running { name, child, log })
}

/// Waits for readiness, announces it, then waits for a stop signal or a
/// child's death.
#[allow(
    clippy::print_stdout,
    reason = "the ready line is the command's output"
)]
async fn supervise(layout: &Layout, running: &mut [Running]) -> anyhow::Result<()> {
    let url = format!("http://{}", layout.gateway);
    let deadline = Instant::now() + READY_TIMEOUT;
    // Each service's own admin /readyz (its database, its bus), then the
    // gateway answering: no probe goes through the gateway to the services.
    let mut waiting: Vec<(&str, SocketAddr, &str)> = layout
        .services
        .iter()
        .map(|(service, _, admin)| (service.name(), *admin, "/readyz"))
        .collect();
    waiting.push(("gateway", layout.gateway, "/healthz"));
    loop {
        check_children(running)?;
        let mut still = Vec::new();
        for (name, addr, path) in waiting {
            if http_status(addr, path).await != Some(200) {
                still.push((name, addr, path));
            }
        }
        waiting = still;
        if waiting.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let names: Vec<String> = waiting
                .iter()
                .map(|(name, addr, path)| format!("{name} (http://{addr}{path})"))
                .collect();
            bail!(
                "the mesh was not ready within {READY_TIMEOUT:?}: not ready: {}; see the logs in {}",
                names.join(", "),
                layout.home.join("logs").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("safra is up: {url}");

    let stop = shutdown::signalled(false);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            // A stop signal wins over a child seen exiting at the same moment.
            biased;
            () = &mut stop => return Ok(()),
            () = tokio::time::sleep(Duration::from_millis(500)) => check_children(running)?,
        }
    }
}

/// An error naming the first child that has exited, with its last log line.
fn check_children(running: &mut [Running]) -> anyhow::Result<()> {
    for entry in running.iter_mut() {
        if let Ok(Some(status)) = entry.child.try_wait() {
            bail!(
                "{} exited ({status}): {}",
                entry.name,
                last_line(&entry.log)
            );
        }
    }
    Ok(())
}

/// The last non-empty line of a log, for one-line error messages.
fn last_line(log: &Path) -> String {
    std::fs::read_to_string(log)
        .ok()
        .and_then(|text| {
            text.lines()
                .rev()
                .find(|line| !line.trim().is_empty())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("see {}", log.display()))
}

/// Closes each child's stdin (its signal to drain and exit), waits up to
/// [`STOP_GRACE`], then kills what is left. The gateway goes first so no
/// new call reaches a draining service.
async fn stop_children(running: &mut Vec<Running>) {
    while let Some(mut entry) = running.pop() {
        drop(entry.child.stdin.take());
        if tokio::time::timeout(STOP_GRACE, entry.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(process = entry.name, "did not stop in time; killing it");
            entry.child.kill().await.ok();
        }
    }
}

/// The HTTP status of `GET <path>` at `addr`, if anything answers. A plain
/// HTTP/1.1 exchange keeps an HTTP client library out of the binary.
async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0_u8; 32];
        let read = stream.read(&mut head).await.ok()?;
        let line = std::str::from_utf8(&head[..read]).ok()?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .ok()
        .flatten()
}

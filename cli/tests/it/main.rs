//! The `safra` binary as a user runs it: `safra up` brings the mesh up on
//! real PostgreSQL and stops it cleanly, a killed `up` leaves no child
//! behind, and bad start-up conditions give one clear line and a non-zero
//! exit. Every test picks its own free ports and database names, so they run
//! in parallel with each other and with a developer's own `safra up`.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use safra::mesh::Service;

mod crash;

const SAFRA: &str = env!("CARGO_BIN_EXE_safra");
/// The first admin's password in the meshes these tests start.
const ADMIN_PASSWORD: &str = "the test admin's password 1";
/// Generous: a debug build on a busy two-core machine.
const READY_WITHIN: Duration = Duration::from_secs(120);

/// A port below the ephemeral range (so no outgoing connection can take it
/// between our check and the server's bind), from a block of its own per
/// test process, checked free.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let block = u16::try_from(std::process::id() % 400).unwrap_or(0);
    loop {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (block * 25 + offset) % 12_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A `safra up` command on free ports, with its state in `home`.
fn up_command(home: &Path) -> (Command, SocketAddr, Vec<(SocketAddr, SocketAddr)>) {
    let mut command = Command::new(SAFRA);
    command
        .arg("up")
        .env("SAFRA_HOME", home)
        .env("SAFRA_LOG_FORMAT", "json")
        .env_remove("DATABASE_URL");
    let gateway = SocketAddr::from(([127, 0, 0, 1], free_port()));
    command.env("SAFRA_GATEWAY_ADDR", gateway.to_string());
    let gateway_admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    command.env("SAFRA_GATEWAY_ADMIN_ADDR", gateway_admin.to_string());
    let mut services = Vec::new();
    for service in Service::ALL {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        command
            .env(
                format!("SAFRA_{}_LISTEN_ADDR", service.env_name()),
                listen.to_string(),
            )
            .env(
                format!("SAFRA_{}_ADMIN_ADDR", service.env_name()),
                admin.to_string(),
            );
        services.push((listen, admin));
    }
    (command, gateway, services)
}

/// A running `safra up`, killed if the test ends early.
struct Up {
    child: Child,
    gateway: SocketAddr,
    /// Each service's gRPC and admin addresses.
    services: Vec<(SocketAddr, SocketAddr)>,
}

impl Up {
    /// Starts `command` and waits for its ready line.
    fn start(
        mut command: Command,
        gateway: SocketAddr,
        services: Vec<(SocketAddr, SocketAddr)>,
    ) -> Up {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("safra up starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines, ready) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut up = Up {
            child,
            gateway,
            services,
        };
        let line = ready.recv_timeout(READY_WITHIN).unwrap_or_else(|_| {
            let mut stderr = String::new();
            if let Some(mut pipe) = up.child.stderr.take() {
                up.child.kill().ok();
                pipe.read_to_string(&mut stderr).ok();
            }
            panic!("safra up printed no ready line; stderr: {stderr}")
        });
        assert_eq!(line, format!("safra is up: http://{gateway}"));
        up
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "safra up did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Status line and body of a plain HTTP/1.1 GET.
/// What a Server-Sent Events stream at `path` sent until `wanted` appeared
/// (head and body as received), within 15 s.
fn sse_until(gateway: SocketAddr, path: &str, bearer: &str, wanted: &str) -> String {
    let mut stream = TcpStream::connect(gateway).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {gateway}\r\nAuthorization: {bearer}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("request");
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0_u8; 4096];
    while started.elapsed() < Duration::from_secs(15) {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(error) => panic!("reading the stream: {error}"),
        }
        if String::from_utf8_lossy(&received).contains(wanted) {
            return String::from_utf8_lossy(&received).into_owned();
        }
    }
    panic!(
        "no {wanted} on {path} in 15 s: {}",
        String::from_utf8_lossy(&received)
    );
}

/// `Bearer <access token>` of `email`, signed in through the edge.
fn login(gateway: SocketAddr, email: &str, password: &str) -> String {
    let body = serde_json::json!({ "email": email, "password": password }).to_string();
    let (status, answer) = http(gateway, "POST", "/v1/accounts:login", &[], &body);
    assert_eq!(status, 200, "{email} signs in: {answer}");
    let tokens: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
    format!(
        "Bearer {}",
        tokens["accessToken"].as_str().expect("an access token")
    )
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(addr, "GET", path, &[], "")
}

/// Status and body of one HTTP/1.1 request with `headers` and a JSON `body`.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let (status, _, body) = http_with_headers(addr, method, path, headers, body);
    (status, body)
}

/// Status, response head and body of one HTTP/1.1 request.
fn http_with_headers(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    write!(stream, "{head}\r\n{body}").expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_default();
    (status, head.to_owned(), body.to_owned())
}

/// Whether nothing listens on `addr` any more.
fn port_released(addr: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Runs `work` on a connection to the database `<prefix>_<name>` of the
/// run with `prefix`.
fn on_database<T>(
    prefix: &str,
    name: &str,
    work: impl AsyncFnOnce(&mut diesel_async::AsyncPgConnection) -> T,
) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let url = safra::data::db::with_database(
        &safra_test_support::server_url(),
        &format!("{prefix}_{name}"),
    );
    runtime.block_on(async {
        let mut conn = safra::data::db::connect_once(&url)
            .await
            .unwrap_or_else(|error| panic!("the {name} database: {error}"));
        work(&mut conn).await
    })
}

/// Whether the event bus of the run with `prefix` holds an event of
/// `event_type` within `patience`.
fn bus_holds(prefix: &str, event_type: &str, patience: Duration) -> bool {
    use diesel_async::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    on_database(prefix, "events", async |conn| {
        let start = Instant::now();
        while start.elapsed() < patience {
            let rows: Vec<Count> =
                diesel::sql_query("SELECT count(*) AS n FROM event_log WHERE event_type = $1")
                    .bind::<diesel::sql_types::Text, _>(event_type)
                    .load(conn)
                    .await
                    .expect("the event log");
            if rows.iter().any(|row| row.n > 0) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    })
}

/// Parks an event in the notifications service of the run with `prefix`,
/// as a subscriber that gave up would; returns the parked entry's id.
fn park_an_event(prefix: &str) -> String {
    use diesel_async::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Parked {
        #[diesel(sql_type = diesel::sql_types::Text)]
        id: String,
    }
    on_database(prefix, "notifications", async |conn| {
        let rows: Vec<Parked> = diesel::sql_query(
            "INSERT INTO parked_events (subscriber, event_id, event_type, envelope, attempts, last_error) \
             VALUES ('notifications', gen_random_uuid(), 'safra.events.v1.UserRegistered', '', 5, \
                     'parked by the up test') RETURNING id::text AS id",
        )
        .load(conn)
        .await
        .expect("parked");
        rows.into_iter().next().expect("a parked row").id
    })
}

fn drop_databases(prefix: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime
        .block_on(safra_test_support::drop_databases_with_prefix(prefix))
        .expect("drop the test's databases");
}

/// `safra up` on the test PostgreSQL server, with databases of its own
/// prefix and a home folder of its own (kept while the test runs).
fn up_on_the_test_server() -> (
    tempfile::TempDir,
    String,
    Command,
    SocketAddr,
    Vec<(SocketAddr, SocketAddr)>,
) {
    let home = tempfile::tempdir().expect("home");
    let prefix = safra_test_support::unique_prefix();
    let (mut command, gateway, services) = up_command(home.path());
    command
        .env("DATABASE_URL", safra_test_support::server_url())
        .env("SAFRA_DB_PREFIX", &prefix)
        .env("SAFRA_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("SAFRA_NOTIFICATIONS_HEARTBEAT_SECS", "2");
    (home, prefix, command, gateway, services)
}

/// The gateway's `/readyz` once it says ready, or its last answer after
/// 10 s: its readiness comes from a background round every 2 s, which may
/// not have run when `safra up` prints its ready line.
fn gateway_readyz(gateway: SocketAddr) -> (u16, String) {
    let asked = Instant::now();
    loop {
        let (status, body) = http_get(gateway, "/readyz");
        if status == 200 || asked.elapsed() > Duration::from_secs(10) {
            return (status, body);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn up_serves_the_mesh_and_stops_cleanly_on_sigterm() {
    let (home, prefix, command, gateway, services) = up_on_the_test_server();
    let mut up = Up::start(command, gateway, services);

    let (status, body) = gateway_readyz(up.gateway);
    assert_eq!(status, 200, "{body}");
    for service in Service::ALL {
        assert!(
            body.contains(&format!(
                "\"{}\":{{\"status\":\"SERVING\"}}",
                service.name()
            )),
            "{service} SERVING in {body}"
        );
    }
    assert_eq!(http_get(up.gateway, "/healthz").0, 200);
    for (_, admin) in &up.services {
        let (status, body) = http_get(*admin, "/readyz");
        assert_eq!(status, 200, "{admin}: {body}");
        assert!(body.contains(r#""database":{"status":"ready"}"#), "{body}");
        let (_, metrics) = http_get(*admin, "/metrics");
        assert!(metrics.contains("safra_build_info{"), "{metrics}");
    }
    for service in Service::ALL {
        assert!(
            home.path()
                .join("logs")
                .join(format!("{service}.log"))
                .exists(),
            "{service} logs to SAFRA_HOME/logs"
        );
    }

    up.signal("-TERM");
    let status = up.wait(Duration::from_secs(30));
    assert!(
        status.success(),
        "safra up exits 0 after SIGTERM, got {status}"
    );
    for addr in std::iter::once(up.gateway).chain(up.services.iter().flat_map(|(a, b)| [*a, *b])) {
        assert!(
            port_released(addr, Duration::from_secs(5)),
            "{addr} released"
        );
    }
    drop_databases(&prefix);
}

fn repository_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ sits in the repository")
        .to_path_buf()
}

/// Runs a test client (Python, Node) against the gateway and asserts that
/// it passed, showing its output when it did not.
fn run_client(program: &str, args: &[&str]) {
    run_client_with(program, args, &[]);
}

fn run_client_with(program: &str, args: &[&str], env: &[(&str, &str)]) {
    let output = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(repository_root())
        .output()
        .unwrap_or_else(|error| panic!("{program} cannot run: {error}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed (scripts/test installs its tools):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn up_with_a_broker_carries_events_through_rabbitmq() {
    let (_home, prefix, mut command, gateway, services) = up_on_the_test_server();
    command
        .env("SAFRA_BROKER", "amqp://guest:guest@127.0.0.1:5672/%2f")
        .env("SAFRA_BROKER_NAMESPACE", &prefix);
    let mut up = Up::start(command, gateway, services);
    let register = r#"{"email":"broker@example.com","password":"a broker password 123","displayName":"Bia","role":"ROLE_INVESTOR"}"#;
    let (status, body) = http(up.gateway, "POST", "/v1/accounts:register", &[], register);
    assert_eq!(status, 200, "{body}");
    let bearer = login(up.gateway, "broker@example.com", "a broker password 123");
    let waited = Instant::now();
    loop {
        let (status, body) = http(
            up.gateway,
            "GET",
            "/v1/notifications",
            &[("Authorization", &bearer)],
            "",
        );
        assert_eq!(status, 200, "{body}");
        if body.contains("Welcome to Safra") {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "no welcome notification through the broker in 30 s: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !bus_holds(
            &prefix,
            "safra.events.v1.UserRegistered",
            Duration::from_millis(100)
        ),
        "with a broker, the PostgreSQL bus carries nothing"
    );
    up.signal("-TERM");
    assert!(up.wait(Duration::from_secs(30)).success());
    for subscription in safra::bus::subscriptions::MESH {
        for queue in [
            format!("{prefix}.{}", subscription.subscriber),
            format!("{prefix}.{}.dead", subscription.subscriber),
        ] {
            drop(
                Command::new("rabbitmqctl")
                    .args(["-q", "delete_queue", &queue])
                    .output(),
            );
        }
    }
    drop_databases(&prefix);
}

#[test]
fn the_gateway_serves_rest_grpc_and_the_console_in_front_of_the_real_mesh() {
    let (_home, prefix, command, gateway, services) = up_on_the_test_server();
    let up = Up::start(command, gateway, services);

    // REST, transcoded to the real accounts service.
    let register = r#"{"email":"Rest@Example.com","password":"a rest password 123","displayName":"Rest","role":"ROLE_INVESTOR"}"#;
    let (status, body) = http(gateway, "POST", "/v1/accounts:register", &[], register);
    assert_eq!(status, 200, "{body}");
    let user: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(user["user"]["email"], "rest@example.com");
    let (status, body) = http(
        gateway,
        "POST",
        "/v1/accounts:login",
        &[],
        r#"{"email":"rest@example.com","password":"a rest password 123"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let tokens: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let bearer = format!(
        "Bearer {}",
        tokens["accessToken"].as_str().expect("an access token")
    );
    let (status, body) = http(
        gateway,
        "GET",
        "/v1/users/me",
        &[("Authorization", &bearer)],
        "",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""role":"ROLE_INVESTOR""#), "{body}");
    let (status, head, _) = http_with_headers(gateway, "GET", "/v1/users/me", &[], "");
    assert_eq!(status, 401);
    assert!(
        head.to_lowercase().contains("www-authenticate: bearer"),
        "{head}"
    );
    let (status, body) = http(gateway, "POST", "/v1/accounts:register", &[], register);
    assert_eq!(status, 409, "a taken e-mail: {body}");
    // Caching as GetJwks declares it.
    let (status, head, body) = http_with_headers(gateway, "GET", "/.well-known/jwks.json", &[], "");
    assert_eq!(status, 200, "{body}");
    assert!(
        head.to_lowercase()
            .contains("cache-control: public, max-age="),
        "{head}"
    );
    // The registration's UserRegistered left the accounts outbox for the
    // event bus, relayed by the accounts process.
    assert!(
        bus_holds(
            &prefix,
            "safra.events.v1.UserRegistered",
            Duration::from_secs(30)
        ),
        "UserRegistered reached {prefix}_events"
    );
    // The wallet opens on first use; a service without handlers yet
    // answers through the normal path.
    let (status, body) = http(
        gateway,
        "GET",
        "/v1/wallet",
        &[("Authorization", &bearer)],
        "",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""amountMinor":"0""#), "{body}");
    let (status, body) = http(
        gateway,
        "GET",
        "/v1/distributions",
        &[("Authorization", &bearer)],
        "",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""distributions":[]"#), "{body}");
    // The jobs monitor, merged at the edge, for admins only.
    let (status, body) = http(
        gateway,
        "GET",
        "/v1/jobs/subscriptions",
        &[("Authorization", &bearer)],
        "",
    );
    assert_eq!(status, 403, "an investor is refused: {body}");
    let admin = login(gateway, "admin@safra.local", ADMIN_PASSWORD);
    let (status, body) = http(
        gateway,
        "GET",
        "/v1/jobs/subscriptions",
        &[("Authorization", &admin)],
        "",
    );
    assert_eq!(status, 200, "{body}");
    for name in ["distribution", "marketplace", "notifications"] {
        assert!(
            body.contains(&format!(r#""name":"{name}""#)),
            "{name} in {body}"
        );
    }
    assert!(body.contains(r#""transport":"postgres""#), "{body}");
    let (status, body) = http(
        gateway,
        "GET",
        "/v1/jobs/outboxes",
        &[("Authorization", &admin)],
        "",
    );
    assert_eq!(status, 200, "{body}");
    for service in Service::ALL {
        assert!(
            body.contains(&format!(r#""service":"{}""#, service.name())),
            "{service} in {body}"
        );
    }
    // The notification stream over REST as Server-Sent Events: open, and
    // alive through the edge (a heartbeat every 2 s in this mesh).
    let events = sse_until(
        gateway,
        "/v1/notifications:stream",
        &bearer,
        "heartbeatTime",
    );
    assert!(
        events
            .to_lowercase()
            .contains("content-type: text/event-stream"),
        "{events}"
    );
    assert!(events.contains("data: {"), "{events}");
    // The registration's UserRegistered reaches notifications over the bus.
    let waited = std::time::Instant::now();
    loop {
        let (status, body) = http(
            gateway,
            "GET",
            "/v1/notifications",
            &[("Authorization", &bearer)],
            "",
        );
        assert_eq!(status, 200, "{body}");
        if body.contains("Welcome to Safra") {
            assert!(body.contains(r#""unreadCount":1"#), "{body}");
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "no welcome notification in 30 s: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body) = http(
        gateway,
        "POST",
        "/v1/wallet:deposit",
        &[("Authorization", &bearer)],
        r#"{"amount":{"currencyCode":"BRL","amountMinor":"0"},"idempotencyKey":"k"}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("amount.amount_minor"), "{body}");
    // The API's description and the console.
    let (status, body) = http_get(gateway, "/openapi.json");
    assert_eq!(status, 200);
    assert!(body.contains("AccountsService_Register"));
    let (status, body) = http_get(gateway, "/");
    assert_eq!(status, 200);
    assert!(
        body.contains("/console/app.js"),
        "the console is built in: {body}"
    );

    // grpcurl through the edge's reflection, an independent typed client
    // over native gRPC, and a real browser.
    let target = gateway.to_string();
    let listed = Command::new("grpcurl")
        .args(["-plaintext", &target, "list"])
        .output()
        .expect("grpcurl runs (scripts/test installs it)");
    let services = String::from_utf8_lossy(&listed.stdout);
    assert!(
        services.contains("safra.accounts.v1.AccountsService"),
        "{services}{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    run_client("python3", &["tests/python/accounts_client.py", &target]);
    let url = format!("http://{gateway}");
    run_client("node", &["gateway/console/test/browser.mjs", &url]);
    run_client("node", &["gateway/console/test/marketplace.mjs", &url]);
    run_client("node", &["gateway/console/test/notifications.mjs", &url]);
    let parked = park_an_event(&prefix);
    run_client_with(
        "node",
        &["gateway/console/test/jobs.mjs", &url],
        &[
            ("SAFRA_ADMIN_EMAIL", "admin@safra.local"),
            ("SAFRA_ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("SAFRA_PARKED_EVENT_ID", &parked),
            ("SAFRA_PARKED_ACTION", "discard"),
        ],
    );

    // REST fuzzing from the published document: no server error, answers
    // as documented, on every service (the jobs monitor as an investor:
    // refused as documented). A fixed seed keeps the run the same from one CI to the next.
    let openapi = format!("{url}/openapi.json");
    let header = format!("Authorization: {bearer}");
    run_client(
        "schemathesis",
        &[
            "run",
            &openapi,
            "--include-path-regex",
            r"^/(v1/(accounts|users|offerings|investments|wallet|distributions|notifications|jobs)|\.well-known)",
            // A stream never ends by itself: its own check is above.
            "--exclude-path-regex",
            r":stream$",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "20",
            "--seed",
            "1",
            "--workers",
            "2",
            "-H",
            &header,
        ],
    );

    drop(up);
    drop_databases(&prefix);
}

#[test]
fn a_killed_up_leaves_no_child_holding_a_port() {
    let (_home, prefix, command, gateway, services) = up_on_the_test_server();
    let mut up = Up::start(command, gateway, services);

    up.signal("-KILL");
    up.wait(Duration::from_secs(10));
    for addr in std::iter::once(up.gateway).chain(up.services.iter().flat_map(|(a, b)| [*a, *b])) {
        assert!(
            port_released(addr, Duration::from_secs(20)),
            "{addr} is still held after its parent was killed"
        );
    }
    drop_databases(&prefix);
}

/// Runs a command to completion and returns its exit status and stderr.
fn run_to_end(command: &mut Command) -> (ExitStatus, String) {
    let output = command.stdin(Stdio::null()).output().expect("runs");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn up_names_a_port_in_use_in_one_line() {
    let home = tempfile::tempdir().expect("home");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let (mut command, _, _) = up_command(home.path());
    command
        .env("SAFRA_GATEWAY_ADDR", addr.to_string())
        .env("DATABASE_URL", safra_test_support::server_url());
    let (status, stderr) = run_to_end(&mut command);
    assert!(!status.success());
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(&format!("gateway cannot listen on {addr}")),
        "{stderr}"
    );
}

#[test]
fn up_names_an_unreachable_database_in_one_line() {
    let home = tempfile::tempdir().expect("home");
    let (mut command, _, _) = up_command(home.path());
    let closed = free_port();
    command.env(
        "DATABASE_URL",
        format!("postgres://postgres:secret@127.0.0.1:{closed}/postgres"),
    );
    let (status, stderr) = run_to_end(&mut command);
    assert!(!status.success());
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot connect to the database: 127.0.0.1:{closed}"
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("secret"),
        "no password in the error: {stderr}"
    );
}

#[test]
fn serve_names_a_bad_variable_in_one_line() {
    let (status, stderr) = run_to_end(
        Command::new(SAFRA)
            .args(["serve", "wallet"])
            .env("DATABASE_URL", "postgres://127.0.0.1/safra_wallet")
            .env("SAFRA_LISTEN_ADDR", "wallet.local"),
    );
    assert!(!status.success());
    assert_eq!(
        stderr.trim_end(),
        "safra: configuration error: SAFRA_LISTEN_ADDR: 'wallet.local' is not an address like 127.0.0.1:8080"
    );

    let (status, stderr) = run_to_end(
        Command::new(SAFRA)
            .args(["serve", "wallet"])
            .env_remove("DATABASE_URL")
            .env_remove("DATABASE_URL_FILE"),
    );
    assert!(!status.success());
    assert!(stderr.contains("DATABASE_URL: is not set"), "{stderr}");
}

#[test]
fn up_without_database_url_runs_a_private_cluster_kept_between_runs() {
    // A clone inside a private folder (mode 0700, as /root is and as
    // mktemp makes it): as root, the postgres user cannot enter it, and up
    // must cope. The first run is the README's: from the clone, SAFRA_HOME
    // unset (the relative default); the second names the same home by its
    // absolute path from elsewhere and finds the same cluster.
    let private = tempfile::tempdir().expect("private folder");
    Command::new("chmod")
        .arg("700")
        .arg(private.path())
        .status()
        .expect("chmod");
    let clone = private.path().join("clone");
    std::fs::create_dir(&clone).expect("clone folder");
    let home = clone.join(".safra");
    let pg_port = free_port();

    for run in 0..2 {
        let (mut command, gateway, services) = up_command(&home);
        command.env("SAFRA_PG_PORT", pg_port.to_string());
        if run == 0 {
            command.env_remove("SAFRA_HOME").current_dir(&clone);
        }
        let mut up = Up::start(command, gateway, services);
        assert!(
            home.join("pg/data/PG_VERSION").exists(),
            "run {run}: cluster in SAFRA_HOME/pg"
        );
        assert_eq!(gateway_readyz(up.gateway).0, 200, "run {run}");
        up.signal("-TERM");
        assert!(
            up.wait(Duration::from_secs(60)).success(),
            "run {run} exits 0"
        );
        assert!(
            port_released(
                SocketAddr::from(([127, 0, 0, 1], pg_port)),
                Duration::from_secs(20)
            ),
            "run {run}: the private cluster it started is stopped"
        );
    }
    // As root, postgres could not enter the home: the cluster went where it
    // can, behind a link.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0");
    let relocated = std::fs::read_link(home.join("pg"));
    assert_eq!(
        relocated.is_ok(),
        root,
        "relocated exactly when run as root"
    );
    if let Ok(relocated) = relocated {
        std::fs::remove_dir_all(relocated).expect("the relocated cluster is removed");
    }
}

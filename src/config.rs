//! Typed configuration, read once at start-up from the process environment
//! and an optional `.env` file.
//!
//! Values come through the small [`Source`] trait so that tests hand in a map
//! instead of mutating the process environment. Every problem is a
//! [`ConfigError`] naming the variable, which binaries print as one line
//! before exiting. Secrets may also be given as `<NAME>_FILE` (a path whose
//! contents are the value), and they print as `***`.

use std::{
    collections::HashMap, fmt, fs, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration,
};

use crate::{
    identity::tls::TlsPaths,
    mesh::{self, Service},
};

/// The `iss` of access tokens unless `SAFRA_JWT_ISSUER` says otherwise.
pub const DEFAULT_ISSUER: &str = "safra-accounts";

/// Where configuration values come from.
pub trait Source {
    /// The raw value of `name`, if set.
    fn get(&self, name: &str) -> Option<String>;
}

impl Source for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// The process environment over an optional `.env` file: a variable set in
/// the environment wins over the same one in the file.
#[derive(Debug, Default)]
pub struct Environment {
    dotenv: HashMap<String, String>,
}

impl Environment {
    /// Reads `.env` from the working directory if it exists.
    ///
    /// # Errors
    /// A `.env` that exists but cannot be parsed.
    pub fn load() -> Result<Self, ConfigError> {
        let path = PathBuf::from(".env");
        if !path.exists() {
            return Ok(Self::default());
        }
        let entries = dotenvy::from_path_iter(&path).map_err(|error| ConfigError {
            variable: ".env".into(),
            problem: error.to_string(),
        })?;
        let mut dotenv = HashMap::new();
        for entry in entries {
            let (name, value) = entry.map_err(|error| ConfigError {
                variable: ".env".into(),
                problem: error.to_string(),
            })?;
            dotenv.insert(name, value);
        }
        Ok(Self { dotenv })
    }
}

impl Source for Environment {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .or_else(|| self.dotenv.get(name).cloned())
    }
}

/// A configuration problem, naming the variable at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error: {variable}: {problem}")]
pub struct ConfigError {
    /// The variable (or file) at fault.
    pub variable: String,
    /// What is wrong with it, and what was expected.
    pub problem: String,
}

/// A value that must never reach a log: its `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that needs it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Typed access to a [`Source`]: each getter names its variable in any error.
#[derive(Clone, Copy)]
pub struct Reader<'a> {
    source: &'a dyn Source,
}

impl fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reader")
    }
}

impl<'a> Reader<'a> {
    /// Reads values from `source`.
    #[must_use]
    pub fn new(source: &'a dyn Source) -> Self {
        Self { source }
    }

    /// The value of `name` (or the contents of the file named by
    /// `<name>_FILE`), if either is set; an empty value counts as unset.
    ///
    /// # Errors
    /// `<name>_FILE` names a file that cannot be read.
    pub fn optional(&self, name: &str) -> Result<Option<String>, ConfigError> {
        if let Some(value) = self.source.get(name).filter(|value| !value.is_empty()) {
            return Ok(Some(value));
        }
        let file_variable = format!("{name}_FILE");
        match self
            .source
            .get(&file_variable)
            .filter(|path| !path.is_empty())
        {
            None => Ok(None),
            Some(path) => fs::read_to_string(&path)
                .map(|contents| Some(contents.trim_end_matches(['\n', '\r']).to_owned()))
                .map_err(|error| ConfigError {
                    variable: file_variable,
                    problem: format!("cannot read '{path}': {error}"),
                }),
        }
    }

    /// The value of `name`, or `default`.
    ///
    /// # Errors
    /// See [`Reader::optional`].
    pub fn string_or(&self, name: &str, default: &str) -> Result<String, ConfigError> {
        Ok(self.optional(name)?.unwrap_or_else(|| default.to_owned()))
    }

    /// A secret that must be set.
    ///
    /// # Errors
    /// Unset, or see [`Reader::optional`].
    pub fn required_secret(&self, name: &str) -> Result<Secret, ConfigError> {
        self.optional(name)?
            .map(Secret::new)
            .ok_or_else(|| ConfigError {
                variable: name.into(),
                problem: format!("is not set (set {name} or {name}_FILE)"),
            })
    }

    /// A secret that may be unset.
    ///
    /// # Errors
    /// See [`Reader::optional`].
    pub fn optional_secret(&self, name: &str) -> Result<Option<Secret>, ConfigError> {
        Ok(self.optional(name)?.map(Secret::new))
    }

    /// A value parsed with [`FromStr`], or `default`; `expected` describes a
    /// valid value for the error line.
    ///
    /// # Errors
    /// A value that does not parse.
    pub fn parse_or<T: FromStr>(
        &self,
        name: &str,
        default: T,
        expected: &str,
    ) -> Result<T, ConfigError> {
        match self.optional(name)? {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|_| ConfigError {
                variable: name.into(),
                problem: format!("'{raw}' is not {expected}"),
            }),
        }
    }

    /// A socket address (`host:port`), or `default`.
    ///
    /// # Errors
    /// A value that is not an IP address and port.
    pub fn socket_addr_or(
        &self,
        name: &str,
        default: SocketAddr,
    ) -> Result<SocketAddr, ConfigError> {
        self.parse_or(name, default, "an address like 127.0.0.1:8080")
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (the default: what log collectors read).
    Json,
    /// Human-readable lines for a terminal.
    Pretty,
}

impl FromStr for LogFormat {
    type Err = ();

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "json" => Ok(LogFormat::Json),
            "pretty" => Ok(LogFormat::Pretty),
            _ => Err(()),
        }
    }
}

/// Logging settings: `SAFRA_LOG_FORMAT` and `RUST_LOG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `SAFRA_LOG_FORMAT`: `json` (default) or `pretty`.
    pub format: LogFormat,
    /// `RUST_LOG`: an `EnvFilter` directive, default `info`.
    pub filter: String,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: where spans go over OTLP/gRPC (unset:
    /// no export).
    pub otlp_endpoint: Option<String>,
}

impl LogConfig {
    /// Reads the logging settings.
    ///
    /// # Errors
    /// An unknown format.
    pub fn read(reader: Reader<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            format: reader.parse_or("SAFRA_LOG_FORMAT", LogFormat::Json, "'json' or 'pretty'")?,
            filter: reader.string_or("RUST_LOG", "info")?,
            otlp_endpoint: reader.optional("OTEL_EXPORTER_OTLP_ENDPOINT")?,
        })
    }
}

/// Connection-pool settings for a service database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// `DATABASE_URL`: `postgres://user[:password]@host[:port]/database`.
    pub url: Secret,
    /// `SAFRA_DB_POOL_SIZE`: the most connections the pool opens (default 10).
    pub pool_size: u32,
    /// `SAFRA_DB_ACQUIRE_TIMEOUT_MS`: how long a call waits for a connection
    /// before failing (default 2000).
    pub acquire_timeout_ms: u64,
    /// `SAFRA_DB_STATEMENT_TIMEOUT_MS`: PostgreSQL's `statement_timeout` on
    /// every pooled connection (default 5000), so a stuck query fails
    /// instead of holding a connection.
    pub statement_timeout_ms: u64,
    /// `SAFRA_DB_PREPARED_STATEMENTS`: `on` (default) keeps each statement
    /// prepared once per connection and reuses it; `off` prepares and
    /// closes it within each call, so that no prepared statement outlives
    /// a call (for PgBouncer in transaction mode).
    pub prepared_statements: bool,
}

impl DatabaseConfig {
    /// Reads the database settings; `DATABASE_URL` is required.
    ///
    /// # Errors
    /// A missing URL, a URL that is not `postgres://`, or a bad number.
    pub fn read(reader: Reader<'_>) -> Result<Self, ConfigError> {
        let url = reader.required_secret("DATABASE_URL")?;
        Self::with_url(reader, "DATABASE_URL", url)
    }

    /// The settings of a second, optional database named by `variable`
    /// (pool settings shared with the service's own), if it is set.
    ///
    /// # Errors
    /// A URL that is not `postgres://`, or a bad number.
    pub fn read_optional(reader: Reader<'_>, variable: &str) -> Result<Option<Self>, ConfigError> {
        match reader.optional_secret(variable)? {
            Some(url) => Self::with_url(reader, variable, url).map(Some),
            None => Ok(None),
        }
    }

    fn with_url(reader: Reader<'_>, variable: &str, url: Secret) -> Result<Self, ConfigError> {
        if !(url.expose().starts_with("postgres://") || url.expose().starts_with("postgresql://")) {
            return Err(ConfigError {
                variable: variable.into(),
                problem: "must start with postgres:// or postgresql://".into(),
            });
        }
        #[cfg(feature = "db")]
        if let Err(error) = crate::data::postgres_tls::Connector::from_url(url.expose()) {
            return Err(ConfigError {
                variable: variable.into(),
                problem: error.to_string(),
            });
        }
        let pool_size =
            reader.parse_or("SAFRA_DB_POOL_SIZE", 10, "a whole number of connections")?;
        if pool_size == 0 {
            return Err(ConfigError {
                variable: "SAFRA_DB_POOL_SIZE".into(),
                problem: "must be at least 1".into(),
            });
        }
        Ok(Self {
            url,
            pool_size,
            acquire_timeout_ms: reader.parse_or(
                "SAFRA_DB_ACQUIRE_TIMEOUT_MS",
                2000,
                "a whole number of milliseconds",
            )?,
            statement_timeout_ms: reader.parse_or(
                "SAFRA_DB_STATEMENT_TIMEOUT_MS",
                5000,
                "a whole number of milliseconds",
            )?,
            prepared_statements: match reader
                .string_or("SAFRA_DB_PREPARED_STATEMENTS", "on")?
                .as_str()
            {
                "on" => true,
                "off" => false,
                other => {
                    return Err(ConfigError {
                        variable: "SAFRA_DB_PREPARED_STATEMENTS".into(),
                        problem: format!("must be on or off, not {other:?}"),
                    });
                }
            },
        })
    }
}

/// `SAFRA_HOME`: the state folder (default `./.safra`), made absolute
/// against the working directory once, here: the private cluster's tools
/// run as another user and in other folders, and a relative path would
/// mean something else to them.
///
/// # Errors
/// See [`Reader::optional`]; or the working directory cannot be read.
pub fn home(reader: Reader<'_>) -> Result<PathBuf, ConfigError> {
    let home = reader.string_or("SAFRA_HOME", ".safra")?;
    std::path::absolute(&home).map_err(|error| ConfigError {
        variable: "SAFRA_HOME".to_owned(),
        problem: format!("cannot make {home} absolute: {error}"),
    })
}

/// The certificate, key and CA files of the process `name`:
/// `SAFRA_TLS_CERT`, `SAFRA_TLS_KEY` and `SAFRA_TLS_CA`, by default
/// `$SAFRA_HOME/certs/<name>.pem`, `<name>.key` and `ca.pem`.
///
/// # Errors
/// See [`Reader::optional`].
pub fn tls_paths(reader: Reader<'_>, name: &str) -> Result<TlsPaths, ConfigError> {
    let defaults = TlsPaths::in_dir(&home(reader)?.join("certs"), name);
    Ok(TlsPaths {
        cert: reader
            .optional("SAFRA_TLS_CERT")?
            .map_or(defaults.cert, PathBuf::from),
        key: reader
            .optional("SAFRA_TLS_KEY")?
            .map_or(defaults.key, PathBuf::from),
        ca: reader
            .optional("SAFRA_TLS_CA")?
            .map_or(defaults.ca, PathBuf::from),
    })
}

/// Everything `safra serve <service>` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Which service this process runs.
    pub service: Service,
    /// `SAFRA_LISTEN_ADDR`: the gRPC listener (default from [`mesh`]).
    pub listen_addr: SocketAddr,
    /// `SAFRA_ADMIN_ADDR`: the admin HTTP listener (default from [`mesh`]).
    pub admin_addr: SocketAddr,
    /// The service's own database.
    pub database: DatabaseConfig,
    /// Its certificate, key and CA.
    pub tls: TlsPaths,
    /// `SAFRA_ACCOUNTS_URL`: where the JWKS comes from (default
    /// `https://127.0.0.1:7001`).
    pub accounts_url: String,
    /// `SAFRA_JWT_ISSUER`: the `iss` tokens must carry (default
    /// `safra-accounts`).
    pub jwt_issuer: String,
    /// Logging.
    pub log: LogConfig,
    /// `SAFRA_BUS_DATABASE_URL`: the PostgreSQL event bus (`safra_events`)
    /// the service's outbox relay publishes to; unset, events stay in the
    /// outbox.
    pub bus_database: Option<DatabaseConfig>,
    /// `SAFRA_BROKER`: a RabbitMQ `amqp://` (or `amqps://`) URL; set, events
    /// travel through the broker instead of the PostgreSQL bus.
    pub broker: Option<Secret>,
    /// `SAFRA_BROKER_NAMESPACE`: the prefix of Safra's exchanges and queues
    /// on the broker (`safra`), so meshes can share one broker.
    pub broker_namespace: String,
}

impl ServiceConfig {
    /// Reads the settings of `service`.
    ///
    /// # Errors
    /// The first bad or missing variable.
    pub fn read(service: Service, reader: Reader<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            service,
            listen_addr: reader
                .socket_addr_or("SAFRA_LISTEN_ADDR", service.default_listen_addr())?,
            admin_addr: reader.socket_addr_or("SAFRA_ADMIN_ADDR", service.default_admin_addr())?,
            database: DatabaseConfig::read(reader)?,
            tls: tls_paths(reader, service.name())?,
            accounts_url: endpoint(reader, "SAFRA_ACCOUNTS_URL", Service::Accounts)?,
            jwt_issuer: reader.string_or("SAFRA_JWT_ISSUER", DEFAULT_ISSUER)?,
            log: LogConfig::read(reader)?,
            bus_database: DatabaseConfig::read_optional(reader, "SAFRA_BUS_DATABASE_URL")?,
            broker: broker_url(reader)?,
            broker_namespace: broker_namespace(reader)?,
        })
    }
}

/// `SAFRA_BROKER`, when set: an AMQP URL.
///
/// # Errors
/// A value that is not `amqp://…` or `amqps://…`.
pub fn broker_url(reader: Reader<'_>) -> Result<Option<Secret>, ConfigError> {
    let Some(url) = reader.optional_secret("SAFRA_BROKER")? else {
        return Ok(None);
    };
    if !(url.expose().starts_with("amqp://") || url.expose().starts_with("amqps://")) {
        return Err(ConfigError {
            variable: "SAFRA_BROKER".into(),
            problem: "expected a RabbitMQ URL, amqp://user:password@host:5672/vhost".into(),
        });
    }
    Ok(Some(url))
}

/// `SAFRA_BROKER_NAMESPACE`, by default `safra`.
///
/// # Errors
/// A value that is not lower-case letters, digits, `_`, `-` and `.`.
pub fn broker_namespace(reader: Reader<'_>) -> Result<String, ConfigError> {
    let namespace = reader.string_or("SAFRA_BROKER_NAMESPACE", "safra")?;
    let fits = !namespace.is_empty()
        && namespace.len() <= 100
        && namespace
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c));
    if !fits {
        return Err(ConfigError {
            variable: "SAFRA_BROKER_NAMESPACE".into(),
            problem: "expected up to 100 of a-z, 0-9, '_', '-' and '.'".into(),
        });
    }
    Ok(namespace)
}

/// Where peer `service` is: `SAFRA_<SERVICE>_URL`, by default its fixed
/// local address.
///
/// # Errors
/// A value that is not an endpoint, naming the variable.
pub fn peer_endpoint(reader: Reader<'_>, service: Service) -> Result<String, ConfigError> {
    endpoint(
        reader,
        &format!("SAFRA_{}_URL", service.env_name()),
        service,
    )
}

/// The endpoint of `service` in `variable`, by default its fixed local
/// address.
fn endpoint(reader: Reader<'_>, variable: &str, service: Service) -> Result<String, ConfigError> {
    let url = reader.string_or(
        variable,
        &format!("https://{}", service.default_listen_addr()),
    )?;
    // A comma-separated list; each entry `host:port`, `https://host:port`
    // or `dns://host:port` (re-resolved by the client).
    let entries: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .collect();
    let bad = entries.iter().find(|entry| {
        mesh::endpoint_authority(entry.strip_prefix("dns://").unwrap_or(entry)).is_none()
    });
    if entries.is_empty() || bad.is_some() {
        return Err(ConfigError {
            variable: variable.to_owned(),
            problem: format!(
                "'{}' is not an endpoint like https://127.0.0.1:7003 or dns://wallet:7003",
                bad.unwrap_or(&url.as_str())
            ),
        });
    }
    Ok(url)
}

/// Everything `safra serve gateway` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// `SAFRA_LISTEN_ADDR`: the one edge port (default `127.0.0.1:8080`).
    pub listen_addr: SocketAddr,
    /// `SAFRA_<SERVICE>_URL` for each service: where to reach it
    /// (default `https://<its default listen address>`).
    pub upstreams: Vec<(Service, String)>,
    /// The gateway's certificate, key and CA, for calling the services.
    pub tls: TlsPaths,
    /// Logging.
    pub log: LogConfig,
    /// `SAFRA_JWT_ISSUER`: the `iss` tokens must carry (default `safra-accounts`).
    pub jwt_issuer: String,
    /// `SAFRA_CORS_ORIGINS`: browser origins allowed to call the edge
    /// (comma-separated; default the console's dev server).
    pub cors_origins: Vec<String>,
    /// `SAFRA_RATE_LIMIT_RPS`: requests per second each client address may
    /// make, with bursts of twice as many (default 200; 0 turns it off).
    pub rate_limit_rps: u32,
    /// `SAFRA_GATEWAY_ADMIN_ADDR`: `/metrics` (default `127.0.0.1:9000`).
    pub admin_addr: SocketAddr,
    /// The public port's defences against slow, idle and many clients.
    pub edge_limits: EdgeLimits,
}

/// How the gateway's public port bounds its clients. Each field is read
/// from the variable named in its comment; times in whole seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeLimits {
    /// `SAFRA_GATEWAY_HEADER_READ_TIMEOUT_SECS`: a request's headers must
    /// arrive within this long of its first byte (default 10).
    pub header_read_timeout: Duration,
    /// `SAFRA_GATEWAY_IDLE_TIMEOUT_SECS`: a connection with no request in
    /// flight is closed after this long (default 60).
    pub idle_timeout: Duration,
    /// `SAFRA_GATEWAY_KEEPALIVE_SECS`: HTTP/2 connections are pinged this
    /// often and closed when a ping is not answered within as long
    /// (default 30).
    pub keepalive: Duration,
    /// `SAFRA_GATEWAY_BODY_TIMEOUT_SECS`: a request body must arrive within
    /// this long (default 10).
    pub body_timeout: Duration,
    /// `SAFRA_GATEWAY_MAX_CONNECTIONS`: open connections in all (default
    /// 10000); past it, new ones are closed at once.
    pub max_connections: usize,
    /// `SAFRA_GATEWAY_MAX_CONNECTIONS_PER_CLIENT`: open connections from one
    /// client address (default 256).
    pub max_connections_per_client: usize,
    /// `SAFRA_GATEWAY_BODY_BUDGET_MIB`: request bodies being read at once, in
    /// MiB (default 64).
    pub body_budget_bytes: usize,
    /// `SAFRA_GATEWAY_BODY_BUDGET_PER_CLIENT_MIB`: of those, from one client
    /// address (default 8).
    pub body_budget_per_client_bytes: usize,
    /// `SAFRA_TRUSTED_PROXIES`: addresses or CIDR blocks of the proxies in
    /// front of the gateway (comma-separated; default none). Only a request
    /// from one of them has its client taken from `X-Forwarded-For`.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            keepalive: Duration::from_secs(30),
            body_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_connections_per_client: 256,
            body_budget_bytes: 64 << 20,
            body_budget_per_client_bytes: 8 << 20,
            trusted_proxies: Vec::new(),
        }
    }
}

impl EdgeLimits {
    fn read(reader: Reader<'_>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let secs = |name: &str, default: Duration| -> Result<Duration, ConfigError> {
            let value: u64 =
                reader.parse_or(name, default.as_secs(), "a whole number of seconds")?;
            if value == 0 {
                return Err(ConfigError {
                    variable: name.into(),
                    problem: "must be at least 1 second".into(),
                });
            }
            Ok(Duration::from_secs(value))
        };
        let count = |name: &str, default: usize| -> Result<usize, ConfigError> {
            let value: usize = reader.parse_or(name, default, "a whole number")?;
            if value == 0 {
                return Err(ConfigError {
                    variable: name.into(),
                    problem: "must be at least 1".into(),
                });
            }
            Ok(value)
        };
        Ok(Self {
            header_read_timeout: secs(
                "SAFRA_GATEWAY_HEADER_READ_TIMEOUT_SECS",
                defaults.header_read_timeout,
            )?,
            idle_timeout: secs("SAFRA_GATEWAY_IDLE_TIMEOUT_SECS", defaults.idle_timeout)?,
            keepalive: secs("SAFRA_GATEWAY_KEEPALIVE_SECS", defaults.keepalive)?,
            body_timeout: secs("SAFRA_GATEWAY_BODY_TIMEOUT_SECS", defaults.body_timeout)?,
            max_connections: count("SAFRA_GATEWAY_MAX_CONNECTIONS", defaults.max_connections)?,
            max_connections_per_client: count(
                "SAFRA_GATEWAY_MAX_CONNECTIONS_PER_CLIENT",
                defaults.max_connections_per_client,
            )?,
            body_budget_bytes: count("SAFRA_GATEWAY_BODY_BUDGET_MIB", 64)? << 20,
            body_budget_per_client_bytes: count("SAFRA_GATEWAY_BODY_BUDGET_PER_CLIENT_MIB", 8)?
                << 20,
            trusted_proxies: trusted_proxies(reader)?,
        })
    }
}

/// An IP network: an address and how many leading bits of it matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    address: std::net::IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `address` is in this network.
    #[must_use]
    pub fn contains(&self, address: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            IpAddr::V4(_) => address,
        };
        match (self.address, address) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = ();

    fn from_str(value: &str) -> Result<Self, ()> {
        let (address, prefix) = match value.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (value, None),
        };
        let address: std::net::IpAddr = address.parse().map_err(drop)?;
        let most = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().map_err(drop)?,
            None => most,
        };
        if prefix > most {
            return Err(());
        }
        Ok(Self { address, prefix })
    }
}

/// `SAFRA_TRUSTED_PROXIES`: comma-separated addresses or CIDR blocks.
fn trusted_proxies(reader: Reader<'_>) -> Result<Vec<IpNet>, ConfigError> {
    const VARIABLE: &str = "SAFRA_TRUSTED_PROXIES";
    reader
        .string_or(VARIABLE, "")?
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry.parse().map_err(|()| ConfigError {
                variable: VARIABLE.into(),
                problem: format!("'{entry}' is not an address or a CIDR block like 10.0.0.0/8"),
            })
        })
        .collect()
}

impl GatewayConfig {
    /// Reads the gateway's settings.
    ///
    /// # Errors
    /// The first bad variable.
    pub fn read(reader: Reader<'_>) -> Result<Self, ConfigError> {
        let mut upstreams = Vec::new();
        for service in Service::ALL {
            let variable = format!("SAFRA_{}_URL", service.env_name());
            upstreams.push((service, endpoint(reader, &variable, service)?));
        }
        Ok(Self {
            listen_addr: reader
                .socket_addr_or("SAFRA_LISTEN_ADDR", mesh::default_gateway_addr())?,
            upstreams,
            tls: tls_paths(reader, "gateway")?,
            log: LogConfig::read(reader)?,
            jwt_issuer: reader.string_or("SAFRA_JWT_ISSUER", DEFAULT_ISSUER)?,
            cors_origins: origins(reader)?,
            rate_limit_rps: reader.parse_or("SAFRA_RATE_LIMIT_RPS", 200_u32, "a whole number")?,
            admin_addr: reader.socket_addr_or(
                "SAFRA_GATEWAY_ADMIN_ADDR",
                mesh::default_gateway_admin_addr(),
            )?,
            edge_limits: EdgeLimits::read(reader)?,
        })
    }
}

/// `SAFRA_CORS_ORIGINS`: browser origins, each `scheme://host[:port]` with
/// nothing after, as a browser sends it in `Origin` (anything else would
/// silently never match).
fn origins(reader: Reader<'_>) -> Result<Vec<String>, ConfigError> {
    const VARIABLE: &str = "SAFRA_CORS_ORIGINS";
    let list = reader.string_or(VARIABLE, "http://localhost:5173,http://127.0.0.1:5173")?;
    list.split(',')
        .map(str::trim)
        .filter(|origin| !origin.is_empty())
        .map(|origin| {
            let host = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            match host {
                Some(host)
                    if !host.is_empty()
                        && !host.contains(['/', '?', '#', ' '])
                        && origin.is_ascii() =>
                {
                    Ok(origin.to_owned())
                }
                _ => Err(ConfigError {
                    variable: VARIABLE.into(),
                    problem: format!(
                        "'{origin}' is not an origin like https://console.example.com or http://localhost:5173"
                    ),
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_are_lists_of_fixed_or_dns_endpoints() {
        let source =
            |value: &str| HashMap::from([("SAFRA_WALLET_URL".to_owned(), value.to_owned())]);
        for good in [
            "https://127.0.0.1:7003",
            "wallet:7003",
            "dns://safra-wallet-headless:7003",
            "https://10.0.0.1:7003, https://10.0.0.2:7003",
        ] {
            let values = source(good);
            assert_eq!(
                peer_endpoint(Reader::new(&values), Service::Wallet)
                    .ok()
                    .as_deref(),
                Some(good),
                "{good}"
            );
        }
        for bad in [
            "dns://wallet",
            "ftp://x:1/y",
            " , ",
            "https://a:1, nonsense",
        ] {
            let values = source(bad);
            let error = peer_endpoint(Reader::new(&values), Service::Wallet).expect_err(bad);
            assert_eq!(error.variable, "SAFRA_WALLET_URL", "{bad}");
        }
    }

    fn source(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn service_defaults_come_from_the_mesh_table() {
        let source = source(&[("DATABASE_URL", "postgres://localhost/safra_wallet")]);
        let config = ServiceConfig::read(Service::Wallet, Reader::new(&source))
            .expect("a complete configuration");
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:7003");
        assert_eq!(config.admin_addr.to_string(), "127.0.0.1:9003");
        assert_eq!(config.database.pool_size, 10);
        assert_eq!(config.log.format, LogFormat::Json);
        // The relative default home, resolved against the working directory.
        let home = std::path::absolute(".safra").expect("a working directory");
        assert_eq!(config.tls.cert, home.join("certs/wallet.pem"));
        assert_eq!(config.tls.ca, home.join("certs/ca.pem"));
    }

    #[test]
    fn tls_paths_follow_safra_home_and_their_overrides() {
        let source = source(&[
            ("SAFRA_HOME", "/var/safra"),
            ("SAFRA_TLS_CERT", "/etc/tls/tls.crt"),
        ]);
        let paths = tls_paths(Reader::new(&source), "gateway").expect("paths");
        assert_eq!(paths.cert, PathBuf::from("/etc/tls/tls.crt"));
        assert_eq!(paths.key, PathBuf::from("/var/safra/certs/gateway.key"));
        assert_eq!(paths.ca, PathBuf::from("/var/safra/certs/ca.pem"));
    }

    #[test]
    fn a_missing_database_url_names_the_variable() {
        let error = ServiceConfig::read(Service::Accounts, Reader::new(&source(&[])))
            .expect_err("DATABASE_URL is required");
        assert_eq!(error.variable, "DATABASE_URL");
        assert_eq!(
            error.to_string(),
            "configuration error: DATABASE_URL: is not set (set DATABASE_URL or DATABASE_URL_FILE)"
        );
    }

    #[test]
    fn a_bad_address_names_the_variable_and_the_value() {
        let source = source(&[
            ("DATABASE_URL", "postgres://localhost/x"),
            ("SAFRA_LISTEN_ADDR", "localhost"),
        ]);
        let error = ServiceConfig::read(Service::Accounts, Reader::new(&source))
            .expect_err("not a socket address");
        assert_eq!(
            error.to_string(),
            "configuration error: SAFRA_LISTEN_ADDR: 'localhost' is not an address like 127.0.0.1:8080"
        );
    }

    #[test]
    fn secrets_are_read_from_files_and_never_printed() {
        let dir = std::env::temp_dir().join(format!("safra-config-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("db-url");
        fs::write(&path, "postgres://u:hunter2@db/safra_accounts\n").expect("write secret");
        let source = source(&[("DATABASE_URL_FILE", path.to_str().expect("utf-8 path"))]);
        let config = DatabaseConfig::read(Reader::new(&source)).expect("url from file");
        assert_eq!(
            config.url.expose(),
            "postgres://u:hunter2@db/safra_accounts"
        );
        assert!(!format!("{config:?}").contains("hunter2"));
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_unreadable_secret_file_names_the_file_variable() {
        let source = source(&[("DATABASE_URL_FILE", "/nonexistent/safra/secret")]);
        let error = DatabaseConfig::read(Reader::new(&source)).expect_err("no such file");
        assert_eq!(error.variable, "DATABASE_URL_FILE");
    }

    #[test]
    fn gateway_origins_must_be_origins() {
        let good = source(&[(
            "SAFRA_CORS_ORIGINS",
            "https://a.example, http://localhost:5173",
        )]);
        assert_eq!(
            GatewayConfig::read(Reader::new(&good))
                .expect("origins")
                .cors_origins,
            ["https://a.example", "http://localhost:5173"]
        );
        for bad in ["localhost:5173", "https://a.example/", "ftp://a.example"] {
            let source = source(&[("SAFRA_CORS_ORIGINS", bad)]);
            let error = GatewayConfig::read(Reader::new(&source)).expect_err(bad);
            assert_eq!(error.variable, "SAFRA_CORS_ORIGINS");
            assert!(error.problem.contains(bad), "{}", error.problem);
        }
    }

    #[test]
    fn gateway_rejects_an_upstream_without_a_port() {
        let source = source(&[("SAFRA_WALLET_URL", "https://wallet")]);
        let error = GatewayConfig::read(Reader::new(&source)).expect_err("needs a scheme");
        assert_eq!(error.variable, "SAFRA_WALLET_URL");
    }
}

//! The catalogue of the mesh: every process `safra up` runs, with its fixed
//! local ports, database and gRPC service name. One table, so the CLI, the
//! gateway and the tests never spell a port or a name twice.

use std::{fmt, net::SocketAddr, str::FromStr};

/// A domain service of the mesh. The gateway is not one: it owns no database
/// and serves no domain contract of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// Users, credentials, tokens and signing keys.
    Accounts,
    /// Offerings (CPRs) and investments.
    Marketplace,
    /// Wallets, the ledger and installment payments.
    Wallet,
    /// Pro-rata distribution of payments to holders.
    Distribution,
    /// Notifications per user, live stream included.
    Notifications,
}

impl Service {
    /// Every service, in start-up order.
    pub const ALL: [Service; 5] = [
        Service::Accounts,
        Service::Marketplace,
        Service::Wallet,
        Service::Distribution,
        Service::Notifications,
    ];

    /// The short name used in commands, certificates and database names.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Service::Accounts => "accounts",
            Service::Marketplace => "marketplace",
            Service::Wallet => "wallet",
            Service::Distribution => "distribution",
            Service::Notifications => "notifications",
        }
    }

    /// The fully qualified gRPC service name of its contract, as reported by
    /// `grpc.health.v1`.
    #[must_use]
    pub const fn grpc_service(self) -> &'static str {
        match self {
            Service::Accounts => "safra.accounts.v1.AccountsService",
            Service::Marketplace => "safra.marketplace.v1.MarketplaceService",
            Service::Wallet => "safra.wallet.v1.WalletService",
            Service::Distribution => "safra.distribution.v1.DistributionService",
            Service::Notifications => "safra.notifications.v1.NotificationsService",
        }
    }

    /// The default loopback address of its mTLS gRPC listener.
    #[must_use]
    pub fn default_listen_addr(self) -> SocketAddr {
        loopback(7000 + self.port_offset())
    }

    /// The default loopback address of its admin HTTP listener.
    #[must_use]
    pub fn default_admin_addr(self) -> SocketAddr {
        loopback(9000 + self.port_offset())
    }

    /// The name of its database on a shared server, `<prefix>_<name>`.
    #[must_use]
    pub fn database_name(self, prefix: &str) -> String {
        format!("{prefix}_{}", self.name())
    }

    /// The upper-case form used in environment variables
    /// (`SAFRA_<NAME>_URL`).
    #[must_use]
    pub fn env_name(self) -> String {
        self.name().to_ascii_uppercase()
    }

    const fn port_offset(self) -> u16 {
        match self {
            Service::Accounts => 1,
            Service::Marketplace => 2,
            Service::Wallet => 3,
            Service::Distribution => 4,
            Service::Notifications => 5,
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of the mesh's services.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown service '{0}' (expected one of accounts, marketplace, wallet, distribution, notifications)"
)]
pub struct UnknownService(pub String);

impl FromStr for Service {
    type Err = UnknownService;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Service::ALL
            .into_iter()
            .find(|service| service.name() == name)
            .ok_or_else(|| UnknownService(name.to_owned()))
    }
}

/// `host:port` of an endpoint written as `https://host:port`,
/// `http://host:port` or `host:port`; `None` if it is not one.
#[must_use]
pub fn endpoint_authority(endpoint: &str) -> Option<String> {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .unwrap_or(endpoint)
        .trim_end_matches('/');
    let valid = !rest.contains('/')
        && rest.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|port| port > 0)
        });
    valid.then(|| rest.to_owned())
}

/// Every process of the mesh by the name in its certificate's SPIFFE id:
/// the five services and the gateway.
pub const PROCESS_NAMES: [&str; 6] = [
    "accounts",
    "marketplace",
    "wallet",
    "distribution",
    "notifications",
    "gateway",
];

/// The gateway's default address: gRPC, grpc-web, REST and the console.
#[must_use]
pub fn default_gateway_addr() -> SocketAddr {
    loopback(8080)
}

/// The gateway's default admin address: `/metrics`, off the public port.
#[must_use]
pub fn default_gateway_admin_addr() -> SocketAddr {
    loopback(9000)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_reduce_to_their_authority() {
        assert_eq!(
            endpoint_authority("https://127.0.0.1:7003").as_deref(),
            Some("127.0.0.1:7003")
        );
        assert_eq!(
            endpoint_authority("wallet:7003").as_deref(),
            Some("wallet:7003")
        );
        assert_eq!(
            endpoint_authority("http://[::1]:7003/").as_deref(),
            Some("[::1]:7003")
        );
        assert_eq!(endpoint_authority("https://wallet"), None);
        assert_eq!(endpoint_authority("https://wallet:0"), None);
        assert_eq!(endpoint_authority("https://wallet:7003/path"), None);
    }

    #[test]
    fn service_names_round_trip() {
        for service in Service::ALL {
            assert_eq!(service.name().parse::<Service>(), Ok(service));
        }
        assert!("gateway".parse::<Service>().is_err());
    }
}

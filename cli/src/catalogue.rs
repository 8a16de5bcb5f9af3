//! What the binary knows about each service crate: its embedded migrations.

use diesel_migrations::EmbeddedMigrations;
use safra::mesh::Service;

/// The embedded migrations of `service`'s database.
pub fn migrations(service: Service) -> &'static EmbeddedMigrations {
    match service {
        Service::Accounts => &safra_accounts::MIGRATIONS,
        Service::Marketplace => &safra_marketplace::MIGRATIONS,
        Service::Wallet => &safra_wallet::MIGRATIONS,
        Service::Distribution => &safra_distribution::MIGRATIONS,
        Service::Notifications => &safra_notifications::MIGRATIONS,
    }
}

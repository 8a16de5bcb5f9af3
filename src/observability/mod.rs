//! What an SRE sees: JSON logs and OpenTelemetry traces with W3C context
//! across calls, request metrics, and the admin HTTP port serving
//! `/metrics`, `/healthz` and `/readyz`.

#[cfg(feature = "server")]
pub mod admin;
#[cfg(feature = "server")]
pub mod metrics;
pub mod telemetry;

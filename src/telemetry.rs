//! Logging with `tracing`: JSON lines by default (what collectors ingest),
//! human-readable lines on request. OpenTelemetry export and trace ids on
//! every line arrive with the runtime issue; every process already goes
//! through this one initialiser so they land everywhere at once.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{ConfigError, LogConfig, LogFormat};

/// Installs the global subscriber for this process, writing to stderr (stdout
/// stays free for a command's own output).
///
/// # Errors
/// A `RUST_LOG` that is not a valid filter. A second call in one process is
/// ignored, so tests may call it freely.
pub fn init(config: &LogConfig) -> Result<(), ConfigError> {
    let filter = EnvFilter::try_new(&config.filter).map_err(|error| ConfigError {
        variable: "RUST_LOG".into(),
        problem: format!("'{}' is not a valid filter: {error}", config.filter),
    })?;
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(fmt::layer().compact().with_writer(std::io::stderr))
            .try_init(),
    };
    // An already-installed subscriber (a second call) is not an error worth stopping for.
    drop(result);
    Ok(())
}

//! The admin HTTP port of a service (`SAFRA_ADMIN_ADDR`): `/metrics` in
//! Prometheus text, `/healthz` (the process answers) and `/readyz` (200 only
//! when every dependency answers; the JSON body lists each). This is the one
//! place a service speaks HTTP/JSON; its API is gRPC only.

use std::{collections::BTreeMap, future::Future, pin::Pin, sync::Arc};

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::observability::metrics::Metrics;

/// A boxed check result: `Ok` or why the dependency is not ready.
pub type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A named readiness check (the database, the broker, a peer).
pub type Check = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    checks: Arc<Vec<(String, Check)>>,
}

#[derive(Debug, Serialize)]
struct DependencyState {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct ReadinessReport {
    status: &'static str,
    dependencies: BTreeMap<String, DependencyState>,
}

/// Serves the admin endpoints on `listener` until `shutdown` completes.
///
/// # Errors
/// The listener fails.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    checks: Vec<(String, Check)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AdminState {
        metrics,
        checks: Arc::new(checks),
    };
    let router = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readiness))
        .with_state(state);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn render_metrics(
    State(state): State<AdminState>,
) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
}

async fn readiness(State(state): State<AdminState>) -> (StatusCode, Json<ReadinessReport>) {
    let mut dependencies = BTreeMap::new();
    for (name, check) in state.checks.iter() {
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(2), check()).await;
        let dependency = match outcome {
            Ok(Ok(())) => DependencyState {
                status: "ready",
                error: None,
            },
            Ok(Err(error)) => DependencyState {
                status: "not_ready",
                error: Some(error),
            },
            Err(_) => DependencyState {
                status: "not_ready",
                error: Some("no answer within 2 s".into()),
            },
        };
        dependencies.insert(name.clone(), dependency);
    }
    let ready = dependencies
        .values()
        .all(|dependency| dependency.status == "ready");
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(ReadinessReport {
            status: if ready { "ready" } else { "not_ready" },
            dependencies,
        }),
    )
}

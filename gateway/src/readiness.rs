//! `/healthz` and `/readyz`: liveness of the gateway itself, and readiness of
//! the mesh behind it, asked of each service's `grpc.health.v1`.

use std::{collections::BTreeMap, time::Duration};

use axum::{Json, extract::State, http::StatusCode};
use safra::{mesh::Service, transport::client::MeshChannel};
use serde::Serialize;
use tokio::task::JoinSet;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// How long one readiness probe waits for a service.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A lazily connected mTLS channel per service, reused across probes.
#[derive(Debug, Clone)]
pub struct Readiness {
    upstreams: Vec<(Service, MeshChannel)>,
}

/// What one service answered, as `/readyz` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamState {
    /// `SERVING`, `NOT_SERVING`, `UNKNOWN`, `SERVICE_UNKNOWN` or `UNREACHABLE`.
    pub status: &'static str,
    /// Why it is unreachable, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The `/readyz` body.
#[derive(Debug, Serialize)]
pub(crate) struct ReadinessReport {
    status: &'static str,
    services: BTreeMap<&'static str, UpstreamState>,
}

impl Readiness {
    /// Probes each service over its channel (connected lazily).
    #[must_use]
    pub fn from_channels(upstreams: Vec<(Service, MeshChannel)>) -> Self {
        Self { upstreams }
    }

    /// Asks every service for its health, all at once.
    pub async fn probe(&self) -> BTreeMap<&'static str, UpstreamState> {
        let mut probes = JoinSet::new();
        for (service, channel) in &self.upstreams {
            let (service, channel) = (*service, channel.clone());
            probes.spawn(async move { (service.name(), probe_one(service, channel).await) });
        }
        let mut states = BTreeMap::new();
        while let Some(joined) = probes.join_next().await {
            if let Ok((name, state)) = joined {
                states.insert(name, state);
            }
        }
        // A probe task that died still counts: absent services are not ready.
        for (service, _) in &self.upstreams {
            states.entry(service.name()).or_insert(UpstreamState {
                status: "UNREACHABLE",
                error: Some("the probe task failed".into()),
            });
        }
        states
    }
}

async fn probe_one(service: Service, channel: MeshChannel) -> UpstreamState {
    let request = HealthCheckRequest {
        service: service.grpc_service().to_owned(),
    };
    let mut request = tonic::Request::new(request);
    request.set_timeout(PROBE_TIMEOUT);
    match HealthClient::new(channel).check(request).await {
        Ok(response) => UpstreamState {
            status: match response.into_inner().status() {
                ServingStatus::Serving => "SERVING",
                ServingStatus::NotServing => "NOT_SERVING",
                ServingStatus::ServiceUnknown => "SERVICE_UNKNOWN",
                ServingStatus::Unknown => "UNKNOWN",
            },
            error: None,
        },
        Err(status) => UpstreamState {
            status: "UNREACHABLE",
            error: Some(format!("{:?}: {}", status.code(), status.message())),
        },
    }
}

/// The gateway process is up and answering.
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 when every service is SERVING, else 503; the body lists each.
pub(crate) async fn readyz(
    State(readiness): State<Readiness>,
) -> (StatusCode, Json<ReadinessReport>) {
    let services = readiness.probe().await;
    let ready = services.values().all(|state| state.status == "SERVING");
    let report = ReadinessReport {
        status: if ready { "ready" } else { "not_ready" },
        services,
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(report))
}

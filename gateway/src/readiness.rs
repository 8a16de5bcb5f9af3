//! `/healthz` and `/readyz`: liveness of the gateway itself, and whether it
//! can route: each service's `grpc.health.v1`, asked by a background task
//! every few seconds. `/readyz` answers from the last round and never calls
//! a service itself, so it costs nothing however often it is asked.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use axum::{Json, http::StatusCode};
use safra::{mesh::Service, transport::client::MeshChannel};
use serde::Serialize;
use tokio::task::JoinSet;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// How long one readiness probe waits for a service.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the background task asks the services.
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// A round older than this no longer counts: the gateway reports not ready.
const STALE_AFTER: Duration = Duration::from_secs(10);

/// A lazily connected mTLS channel per service, reused across probes, and
/// the last round's answers.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    upstreams: Vec<(Service, MeshChannel)>,
    last: Arc<RwLock<Option<Round>>>,
}

/// What the services answered, and when.
#[derive(Debug, Clone)]
struct Round {
    at: Instant,
    services: BTreeMap<&'static str, UpstreamState>,
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
    /// `ready`, `not_ready`, `starting` (no round yet) or `stale`.
    status: &'static str,
    /// Seconds since the services were last asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    age_seconds: Option<u64>,
    services: BTreeMap<&'static str, UpstreamState>,
}

impl Readiness {
    /// Probes each service over its channel (connected lazily), once
    /// [`Readiness::refresh_every`] runs.
    #[must_use]
    pub fn watching(upstreams: Vec<(Service, MeshChannel)>) -> Self {
        Self {
            upstreams,
            last: Arc::default(),
        }
    }

    /// Asks every service every `period`, for as long as it runs.
    pub async fn refresh_every(self, period: Duration) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.refresh().await;
        }
    }

    /// Asks every service now and keeps the answers.
    pub async fn refresh(&self) {
        let services = self.probe().await;
        let round = Round {
            at: Instant::now(),
            services,
        };
        *self
            .last
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(round);
    }

    /// `/readyz`: 200 when the last round, at most [`STALE_AFTER`] old,
    /// found every service SERVING (the gateway can route every call);
    /// else 503. With no upstreams (an edge built for tests) it is ready.
    pub(crate) fn report(&self) -> (StatusCode, Json<ReadinessReport>) {
        let last = self
            .last
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let (status, age, services) = match last {
            None if self.upstreams.is_empty() => ("ready", None, BTreeMap::new()),
            None => ("starting", None, BTreeMap::new()),
            Some(round) => {
                let age = round.at.elapsed();
                let status = if age > STALE_AFTER {
                    "stale"
                } else if round
                    .services
                    .values()
                    .all(|state| state.status == "SERVING")
                {
                    "ready"
                } else {
                    "not_ready"
                };
                (status, Some(age.as_secs()), round.services)
            }
        };
        let code = if status == "ready" {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (
            code,
            Json(ReadinessReport {
                status,
                age_seconds: age,
                services,
            }),
        )
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

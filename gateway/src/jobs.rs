//! The jobs monitor at the edge (`safra.jobs.v1.JobsService`, admin only):
//! every service answers for its own outbox and subscribers; the edge asks
//! each, with the admin's token, and merges — subscriptions by name,
//! outboxes by service, parked events newest first across services (one
//! keyset page token works for all of them), and a retry or discard goes to
//! the service that holds the parked event. It is served in the gateway's
//! process on a loopback mTLS port of its own, so the edge reaches it like
//! any upstream: REST, grpc-web and gRPC alike.

use safra::{
    contract::status,
    data::paging,
    jobs::v1::{
        DiscardParkedEventRequest, DiscardParkedEventResponse, ListOutboxesRequest,
        ListOutboxesResponse, ListParkedEventsRequest, ListParkedEventsResponse,
        ListSubscriptionsRequest, ListSubscriptionsResponse, ParkedEvent, RetryParkedEventRequest,
        RetryParkedEventResponse, jobs_service_client::JobsServiceClient,
        jobs_service_server::JobsService,
    },
    mesh::Service,
    transport::client::{CallContext, MeshChannel},
    r#type::v1::ErrorReason,
};
use tonic::{Code, Request, Response, Status};

/// Every service's jobs monitor, merged.
#[derive(Debug, Clone)]
pub struct MergedJobs {
    services: Vec<(Service, JobsServiceClient<MeshChannel>)>,
}

impl MergedJobs {
    /// Asks each of `services` over its channel.
    #[must_use]
    pub fn new(services: Vec<(Service, MeshChannel)>) -> Self {
        Self {
            services: services
                .into_iter()
                .map(|(service, channel)| (service, JobsServiceClient::new(channel)))
                .collect(),
        }
    }
}

/// A service's failure, named: the monitor shows all or says who is away.
fn from(service: Service, error: &Status) -> Status {
    Status::new(error.code(), format!("{service}: {}", error.message()))
}

fn newest_first(a: &ParkedEvent, b: &ParkedEvent) -> std::cmp::Ordering {
    let time = |event: &ParkedEvent| {
        event
            .create_time
            .as_ref()
            .map(|time| (time.seconds, time.nanos))
    };
    time(b).cmp(&time(a)).then_with(|| b.id.cmp(&a.id))
}

#[tonic::async_trait]
impl JobsService for MergedJobs {
    async fn list_subscriptions(
        &self,
        request: Request<ListSubscriptionsRequest>,
    ) -> Result<Response<ListSubscriptionsResponse>, Status> {
        let context = CallContext::from_inbound(&request);
        let mut subscriptions = Vec::new();
        for (service, client) in &self.services {
            let answer = client
                .clone()
                .list_subscriptions(context.outbound(ListSubscriptionsRequest::default())?)
                .await
                .map_err(|error| from(*service, &error))?;
            subscriptions.extend(answer.into_inner().subscriptions);
        }
        subscriptions.sort_by(|a, b| a.name.cmp(&b.name));
        // A retired cursor is reported by every service on the bus: once.
        subscriptions.dedup_by(|a, b| a.retired && b.retired && a.name == b.name);
        Ok(Response::new(ListSubscriptionsResponse {
            subscriptions,
            next_page_token: String::new(),
        }))
    }

    async fn list_outboxes(
        &self,
        request: Request<ListOutboxesRequest>,
    ) -> Result<Response<ListOutboxesResponse>, Status> {
        let context = CallContext::from_inbound(&request);
        let mut outboxes = Vec::new();
        for (service, client) in &self.services {
            let answer = client
                .clone()
                .list_outboxes(context.outbound(ListOutboxesRequest::default())?)
                .await
                .map_err(|error| from(*service, &error))?;
            outboxes.extend(answer.into_inner().outboxes);
        }
        outboxes.sort_by(|a, b| a.service.cmp(&b.service));
        Ok(Response::new(ListOutboxesResponse {
            outboxes,
            next_page_token: String::new(),
        }))
    }

    async fn list_parked_events(
        &self,
        request: Request<ListParkedEventsRequest>,
    ) -> Result<Response<ListParkedEventsResponse>, Status> {
        let context = CallContext::from_inbound(&request);
        let body = request.into_inner();
        let size = paging::page_size(body.page_size);
        let mut parked = Vec::new();
        let mut more = false;
        for (service, client) in &self.services {
            let answer = client
                .clone()
                .list_parked_events(context.outbound(body.clone())?)
                .await
                .map_err(|error| from(*service, &error))?
                .into_inner();
            more |= !answer.next_page_token.is_empty();
            parked.extend(answer.parked_events);
        }
        parked.sort_by(newest_first);
        more |= parked.len() > size;
        parked.truncate(size);
        // Every service pages by (create_time, id): the last one shown is
        // where each of them resumes.
        let next_page_token = match parked.last() {
            Some(last) if more => {
                let time = last
                    .create_time
                    .as_ref()
                    .and_then(paging::from_timestamp)
                    .ok_or_else(|| status::internal(&"a parked event without a time"))?;
                let id = uuid::Uuid::parse_str(&last.id)
                    .map_err(|_| status::internal(&"a parked event id that is not a UUID"))?;
                paging::encode(paging::Keyset { time, id })
            }
            _ => String::new(),
        };
        Ok(Response::new(ListParkedEventsResponse {
            parked_events: parked,
            next_page_token,
        }))
    }

    async fn retry_parked_event(
        &self,
        request: Request<RetryParkedEventRequest>,
    ) -> Result<Response<RetryParkedEventResponse>, Status> {
        let context = CallContext::from_inbound(&request);
        let body = request.into_inner();
        for (service, client) in &self.services {
            match client
                .clone()
                .retry_parked_event(context.outbound(body.clone())?)
                .await
            {
                Ok(answer) => return Ok(answer),
                Err(error) if error.code() == Code::NotFound => {}
                Err(error) => return Err(from(*service, &error)),
            }
        }
        Err(not_found(&body.parked_event_id))
    }

    async fn discard_parked_event(
        &self,
        request: Request<DiscardParkedEventRequest>,
    ) -> Result<Response<DiscardParkedEventResponse>, Status> {
        let context = CallContext::from_inbound(&request);
        let body = request.into_inner();
        for (service, client) in &self.services {
            match client
                .clone()
                .discard_parked_event(context.outbound(body.clone())?)
                .await
            {
                Ok(answer) => return Ok(answer),
                Err(error) if error.code() == Code::NotFound => {}
                Err(error) => return Err(from(*service, &error)),
            }
        }
        Err(not_found(&body.parked_event_id))
    }
}

fn not_found(id: &str) -> Status {
    status::with_metadata(
        Code::NotFound,
        ErrorReason::ParkedEventNotFound,
        "no such parked event",
        &[("parked_event_id", id.to_owned())],
        Vec::new(),
    )
}

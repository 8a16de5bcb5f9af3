//! A service process as the mesh sees it before any domain RPC exists:
//! over mutual TLS, grpc.health.v1 reports its contract SERVING, and server
//! reflection (v1 and v1alpha, for grpcurl builds that speak only v1alpha)
//! lists it.

use std::net::SocketAddr;

use safra::mesh::Service;
use safra_test_support::TestPki;
use tokio::sync::oneshot;
use tokio_stream::StreamExt;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::{v1, v1alpha};

/// Serves `service` over mTLS with its certificate from `pki`.
pub(crate) async fn spawn_service(
    pki: &TestPki,
    service: Service,
) -> (SocketAddr, oneshot::Sender<()>) {
    let tls = pki.tls(service.name());
    let listener = safra::transport::server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    // No token is presented in these tests; an empty key set suffices.
    let verifier = std::sync::Arc::new(safra::identity::auth::TokenVerifier::new(
        safra::identity::auth::DEFAULT_ISSUER,
        std::sync::Arc::new(safra::identity::auth::StaticKeys(std::sync::Arc::default())),
    ));
    tokio::spawn(async move {
        safra::transport::server::serve(service, listener, &tls, verifier, async {
            stopped.await.ok();
        })
        .await
        .expect("serves");
    });
    (addr, stop)
}

/// A channel from the gateway's identity to `service` at `addr`.
fn channel(
    pki: &TestPki,
    service: Service,
    addr: SocketAddr,
) -> safra::transport::client::MeshChannel {
    safra::transport::client::mesh_channel(&pki.tls("gateway"), service.name(), &addr.to_string())
        .expect("a mesh channel")
}

#[tokio::test]
async fn health_reports_the_service_contract_serving() {
    let pki = TestPki::new();
    let (addr, _stop) = spawn_service(&pki, Service::Marketplace).await;
    let mut health = HealthClient::new(channel(&pki, Service::Marketplace, addr));
    let status = health
        .check(HealthCheckRequest {
            service: "safra.marketplace.v1.MarketplaceService".into(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);

    let unknown = health
        .check(HealthCheckRequest {
            service: "safra.wallet.v1.WalletService".into(),
        })
        .await
        .expect_err("another service's contract is not served here");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn reflection_lists_the_service_in_v1_and_v1alpha() {
    let pki = TestPki::new();
    let (addr, _stop) = spawn_service(&pki, Service::Wallet).await;
    let channel = channel(&pki, Service::Wallet, addr);

    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = v1::server_reflection_client::ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1 reflection answers")
        .into_inner();
    let response = responses.next().await.expect("one response").expect("ok");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("expected a service list, got {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"safra.wallet.v1.WalletService".to_owned()),
        "{names:?}"
    );

    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "health is described, so grpcurl can call it: {names:?}"
    );

    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "safra.wallet.v1.WalletService".into(),
            ),
        ),
    };
    let mut responses = v1alpha::server_reflection_client::ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1alpha reflection answers")
        .into_inner();
    let response = responses.next().await.expect("one response").expect("ok");
    assert!(
        matches!(
            response.message_response,
            Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(ref files))
                if !files.file_descriptor_proto.is_empty()
        ),
        "{response:?}"
    );
}

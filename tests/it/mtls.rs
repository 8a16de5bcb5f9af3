//! Mutual TLS between mesh processes, with real certificates from a
//! throw-away CA: who gets in, who is refused, what the server learns about
//! the caller, and certificate rotation without a restart.

use std::{net::SocketAddr, sync::Arc};

use rustls::{ClientConfig, RootCertStore, pki_types::CertificateDer, pki_types::pem::PemObject};
use safra::{
    identity::tls::{self, MeshTls, TlsPaths},
    mesh::Service,
    transport::client::MeshConnector,
};
use safra_test_support::TestPki;
use tonic::transport::Endpoint;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tower::Service as _;

use super::serving::spawn_service;

/// Asks the wallet's health through `connector`.
async fn wallet_health(
    connector: MeshConnector,
    addr: SocketAddr,
) -> Result<ServingStatus, tonic::Status> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_with_connector_lazy(connector);
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: Service::Wallet.grpc_service().into(),
        })
        .await
        .map(|response| response.into_inner().status())
}

#[tokio::test]
async fn a_mesh_peer_with_a_valid_certificate_gets_in() {
    let pki = TestPki::new();
    let (addr, _stop) = spawn_service(&pki, Service::Wallet).await;
    let connector = MeshConnector::new(&pki.tls("distribution"), "wallet").expect("connector");
    assert_eq!(
        wallet_health(connector, addr).await.expect("served"),
        ServingStatus::Serving
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let pki = TestPki::new();
    let (addr, _stop) = spawn_service(&pki, Service::Wallet).await;
    let ca = std::fs::read(pki.certs().ca_cert()).expect("ca.pem");
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.expect("pem")).expect("root");
    }
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let refused = wallet_health(MeshConnector::from_config(Arc::new(config)), addr).await;
    assert!(
        refused.is_err(),
        "served without a client certificate: {refused:?}"
    );
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let pki = TestPki::new();
    let stranger = TestPki::new();
    let (addr, _stop) = spawn_service(&pki, Service::Wallet).await;
    // It trusts our CA (so only the server's check can fail) but presents a
    // certificate from another CA, with a perfectly good SPIFFE id.
    let foreign = stranger.paths("distribution");
    let tls = MeshTls::load(TlsPaths {
        cert: foreign.cert,
        key: foreign.key,
        ca: pki.certs().ca_cert(),
    })
    .expect("loadable");
    let refused = wallet_health(MeshConnector::new(&tls, "wallet").expect("connector"), addr).await;
    assert!(
        refused.is_err(),
        "served a certificate from another CA: {refused:?}"
    );
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let pki = TestPki::new();
    let (addr, _stop) = spawn_service(&pki, Service::Wallet).await;
    let now = time::OffsetDateTime::now_utc();
    pki.certs()
        .issue_valid_between(
            "stale",
            now - time::Duration::days(2),
            now - time::Duration::days(1),
        )
        .expect("an expired leaf");
    let connector = MeshConnector::new(&pki.tls("stale"), "wallet").expect("connector");
    let refused = wallet_health(connector, addr).await;
    assert!(
        refused.is_err(),
        "served an expired certificate: {refused:?}"
    );
}

#[tokio::test]
async fn a_client_refuses_a_server_with_another_identity() {
    let pki = TestPki::new();
    let (addr, _stop) = spawn_service(&pki, Service::Wallet).await;
    // The caller wants accounts; the wallet's certificate says wallet.
    let connector = MeshConnector::new(&pki.tls("gateway"), "accounts").expect("connector");
    let refused = wallet_health(connector, addr).await;
    assert!(refused.is_err(), "talked to the wrong service: {refused:?}");
}

#[tokio::test]
async fn the_server_learns_the_callers_service_identity() {
    let pki = TestPki::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server_tls = pki.tls("wallet");
    let mut accepted = tls::accept(listener, server_tls.server_config().expect("config"));

    let mut connector = MeshConnector::new(&pki.tls("marketplace"), "wallet").expect("connector");
    let uri = format!("http://{addr}").parse().expect("uri");
    let _client = connector.call(uri).await.expect("handshake");

    let stream = accepted.recv().await.expect("an accepted connection");
    assert_eq!(stream.peer().service.as_deref(), Some("marketplace"));
    assert!(stream.peer().remote_addr.is_some());
}

/// The DER of the leaf a server presents to a fresh connection.
async fn presented_leaf(pki: &TestPki, addr: SocketAddr) -> Vec<u8> {
    let mut connector = MeshConnector::new(&pki.tls("gateway"), "wallet").expect("connector");
    let uri = format!("http://{addr}").parse().expect("uri");
    let io = connector.call(uri).await.expect("handshake");
    let (_, session) = io.inner().get_ref().get_ref();
    session
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|cert| cert.to_vec())
        .expect("a server certificate")
}

#[tokio::test]
async fn rotated_certificates_are_served_without_a_restart() {
    let pki = TestPki::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server_tls = pki.tls("wallet");
    let mut accepted = tls::accept(listener, server_tls.server_config().expect("config"));
    tokio::spawn(async move { while accepted.recv().await.is_some() {} });

    let before = presented_leaf(&pki, addr).await;
    assert!(
        !server_tls
            .reload_if_changed()
            .expect("unchanged files reload"),
        "nothing changed yet"
    );

    pki.certs()
        .issue("wallet", safra::identity::certs::LEAF_VALIDITY)
        .expect("a new wallet leaf");
    assert!(server_tls.reload_if_changed().expect("new files load"));
    let after = presented_leaf(&pki, addr).await;
    assert_ne!(before, after, "the new certificate is served");

    // A broken file on disk is refused; the server keeps its last good one.
    std::fs::write(pki.certs().leaf_cert("wallet"), b"not a certificate").expect("write");
    assert!(server_tls.reload_if_changed().is_err());
    assert_eq!(presented_leaf(&pki, addr).await, after);
}

//! The bare handler over plain tokio-rustls, without the mesh's write
//! coalescing (`safra::transport::coalesce`): what stock tonic over rustls costs, so the
//! benchmark shows what coalescing buys.

use std::{
    io,
    net::SocketAddr,
    path::Path,
    pin::Pin,
    task::{Context, Poll},
};

use safra::{
    identity::tls::{MeshTls, TlsPaths},
    testing::echo::v1::echo_service_server::EchoServiceServer,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

use crate::{Echo, prepare};

/// A server-side TLS stream tonic can serve (it needs `Connected`).
struct StockTls(tokio_rustls::server::TlsStream<TcpStream>);

impl tonic::transport::server::Connected for StockTls {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for StockTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for StockTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// Serves the echo contract over mutual TLS with the mesh's certificates,
/// one handshake at a time (the benchmark connects a few times only).
pub async fn serve(dir: &Path, addr: SocketAddr) -> anyhow::Result<()> {
    prepare(dir)?;
    let tls = MeshTls::load(TlsPaths::in_dir(dir, "wallet"))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config()?);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let incoming = accept_all(listener, acceptor);
    tonic::transport::Server::builder()
        .add_service(EchoServiceServer::new(Echo))
        .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(incoming))
        .await?;
    Ok(())
}

fn accept_all(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
) -> tokio::sync::mpsc::Receiver<io::Result<StockTls>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            if tcp.set_nodelay(true).is_err() {
                continue;
            }
            // A failed handshake is the client's problem, not the server's.
            let Ok(accepted) = acceptor.accept(tcp).await else {
                continue;
            };
            if sender.send(Ok(StockTls(accepted))).await.is_err() {
                break;
            }
        }
    });
    receiver
}

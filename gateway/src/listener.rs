//! The edge's listener: every accepted connection gets `TCP_NODELAY` and the
//! mesh's write coalescing ([`safra::transport::coalesce`]), so the answers of
//! concurrent HTTP/2 streams leave together, and carries the client's
//! address for the rate limit and `x-forwarded-for`.

use std::{io, net::SocketAddr, time::Duration};

use axum::{
    extract::connect_info::Connected,
    serve::{IncomingStream, Listener},
};
use safra::transport::coalesce::Coalesced;
use tokio::net::{TcpListener, TcpStream};

/// The public port's listener.
#[derive(Debug)]
pub(crate) struct EdgeListener(pub(crate) TcpListener);

/// The peer address of the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub(crate) SocketAddr);

impl Listener for EdgeListener {
    type Io = Coalesced<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((tcp, addr)) => {
                    // Small answers must not wait for the peer's ACK;
                    // coalescing is what batches them.
                    if let Err(error) = tcp.set_nodelay(true) {
                        tracing::debug!(%addr, %error, "cannot set TCP_NODELAY");
                    }
                    return (Coalesced::new(tcp), addr);
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off briefly
                    // rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl Connected<IncomingStream<'_, EdgeListener>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, EdgeListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

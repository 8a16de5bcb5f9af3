//! When a process should stop: Ctrl-C, SIGTERM, or — for a child of
//! `safra up` — its stdin pipe closing, so that a parent killed with SIGKILL
//! leaves no child holding a port.

use tokio::io::AsyncReadExt;

/// Set by `safra up` on its children: stop when stdin reaches end of file.
pub const EXIT_ON_STDIN_EOF: &str = "SAFRA_EXIT_ON_STDIN_EOF";

/// Completes on the first stop signal.
///
/// A supervised process (a child of `safra up`) stops when its stdin closes
/// or on SIGTERM, and ignores Ctrl-C: the terminal sends SIGINT to the whole
/// process group, and the parent decides the order of the stop (gateway
/// first, so no new call reaches a draining service).
pub async fn signalled(supervised: bool) {
    if supervised {
        tokio::spawn(async { while tokio::signal::ctrl_c().await.is_ok() {} });
        tokio::select! {
            () = terminate() => {}
            () = stdin_closed() => {}
        }
    } else {
        tokio::select! {
            () = interrupt() => {}
            () = terminate() => {}
        }
    }
}

async fn stdin_closed() {
    let mut stdin = tokio::io::stdin();
    let mut buffer = [0_u8; 64];
    // Anything the parent writes is ignored; only the end matters.
    while matches!(stdin.read(&mut buffer).await, Ok(read) if read > 0) {}
}

async fn interrupt() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn terminate() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut stream) => {
            stream.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}

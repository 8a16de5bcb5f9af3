//! Write coalescing for the mesh's connections (mutual TLS between
//! processes, and the gateway's public port): many small HTTP/2 writes leave
//! as one TLS record and one system call.
//!
//! Why: hyper serves each HTTP/2 stream on a task of its own, and tokio runs
//! a task woken by the running one next (its LIFO slot). So when one of many
//! concurrent calls finishes, the connection task runs at once and flushes
//! that single response: one encryption, one `writev`, one TCP segment per
//! call, while the other finished calls wait their turn to do the same.
//! [`Coalesced`] answers the first flush after new data by yielding once
//! (it wakes its own task and returns `Pending`); the calls already
//! runnable finish meanwhile, and the next flush writes all their frames
//! together. When nothing else is runnable the task is polled again at once,
//! so a lone call waits one extra poll, not a timer.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes held back: a write that would pass it first sends what is
/// buffered, and a write this large goes straight through (copying a large
/// message buys nothing).
const MAX_BUFFERED: usize = 64 * 1024;

/// A stream whose writes are buffered until a flush, and whose first flush
/// after new data yields once so that other tasks can add to the batch.
#[derive(Debug)]
pub struct Coalesced<IO> {
    inner: IO,
    buffered: Vec<u8>,
    /// How much of `buffered` the inner stream has taken.
    written: usize,
    /// Whether the pending flush has already yielded once.
    yielded: bool,
}

impl<IO> Coalesced<IO> {
    /// Wraps `inner`.
    pub fn new(inner: IO) -> Self {
        Self {
            inner,
            buffered: Vec::new(),
            written: 0,
            yielded: false,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &IO {
        &self.inner
    }
}

impl<IO: AsyncWrite + Unpin> Coalesced<IO> {
    /// Hands every buffered byte to the inner stream.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buffered.len() {
            let taken =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buffered[self.written..]))?;
            if taken == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += taken;
        }
        self.buffered.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Coalesced<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Coalesced<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total: usize = bufs.iter().map(|buf| buf.len()).sum();
        if !this.buffered.is_empty() && this.buffered.len() + total > MAX_BUFFERED {
            ready!(this.poll_drain(cx))?;
        }
        if total >= MAX_BUFFERED {
            // Large writes gain nothing from a copy.
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        for buf in bufs {
            this.buffered.extend_from_slice(buf);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.buffered.is_empty() && !this.yielded {
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_drain(cx))?;
        this.yielded = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn bytes_arrive_in_order_once_flushed() -> io::Result<()> {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut stream = Coalesced::new(near);
        stream.write_all(b"one ").await?;
        stream.write_all(b"two ").await?;
        let large = vec![7_u8; MAX_BUFFERED * 2];
        stream.write_all(&large).await?;
        stream.write_all(b" three").await?;
        stream.flush().await?;
        let mut received = vec![0_u8; 8 + large.len() + 6];
        far.read_exact(&mut received).await?;
        assert_eq!(&received[..8], b"one two ");
        assert!(received[8..8 + large.len()].iter().all(|byte| *byte == 7));
        assert_eq!(&received[8 + large.len()..], b" three");
        Ok(())
    }

    #[tokio::test]
    async fn the_buffer_never_holds_more_than_its_bound() -> io::Result<()> {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut stream = Coalesced::new(near);
        for _ in 0..100 {
            stream.write_all(&[1_u8; 1000]).await?;
            assert!(stream.buffered.len() <= MAX_BUFFERED);
        }
        stream.write_all(&vec![2_u8; MAX_BUFFERED + 1]).await?;
        assert!(stream.buffered.len() <= MAX_BUFFERED);
        stream.flush().await?;
        let mut received = vec![0_u8; 100_000 + MAX_BUFFERED + 1];
        far.read_exact(&mut received).await?;
        assert!(received[..100_000].iter().all(|byte| *byte == 1));
        assert!(received[100_000..].iter().all(|byte| *byte == 2));
        Ok(())
    }

    #[tokio::test]
    async fn nothing_leaves_before_a_flush_and_shutdown_drains() -> io::Result<()> {
        let (near, mut far) = tokio::io::duplex(1 << 16);
        let mut stream = Coalesced::new(near);
        stream.write_all(b"held").await?;
        let mut probe = [0_u8; 4];
        let early = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            far.read_exact(&mut probe),
        )
        .await;
        assert!(early.is_err(), "nothing may be sent before a flush");
        stream.shutdown().await?;
        far.read_exact(&mut probe).await?;
        assert_eq!(&probe, b"held");
        Ok(())
    }

    #[tokio::test]
    async fn the_first_flush_yields_once_then_writes() -> io::Result<()> {
        let (near, _far) = tokio::io::duplex(1 << 16);
        let mut stream = Coalesced::new(near);
        stream.write_all(b"x").await?;
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(Pin::new(&mut stream).poll_flush(&mut cx).is_pending());
        assert!(matches!(
            Pin::new(&mut stream).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        // Nothing buffered: a flush does not yield.
        assert!(matches!(
            Pin::new(&mut stream).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        Ok(())
    }
}

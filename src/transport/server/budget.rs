//! A memory budget for request bodies being read: every body chunk that
//! arrives is charged to the whole process's budget and to its client's,
//! and given back when the body is dropped. A body that would overdraw
//! either fails with [`BudgetExceeded`], which the contract stage and the
//! edge answer with RESOURCE_EXHAUSTED, so many slow or large uploads at
//! once cannot grow the process without bound.

use std::{
    collections::HashMap,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// What a refused body reports: the budget it would overdraw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many request bodies are being read {0}; try again shortly")]
pub struct BudgetExceeded(pub &'static str);

/// Reads what a client still sends of a refused request's body and drops
/// each chunk as it comes, up to `limit` bytes and for at most `deadline`:
/// an HTTP/1.1 client still writing sees the answer instead of a reset
/// connection, and nothing it sent is kept.
pub async fn discard<B: Body + Unpin>(mut body: B, limit: usize, deadline: std::time::Duration) {
    use http_body_util::BodyExt as _;

    let mut left = limit;
    let drained = async {
        while let Some(Ok(frame)) = body.frame().await {
            let Some(data) = frame.data_ref() else {
                continue;
            };
            match left.checked_sub(bytes::Buf::remaining(data)) {
                Some(rest) => left = rest,
                None => break,
            }
        }
    };
    // Past the deadline the connection may close: the answer was sent.
    tokio::time::timeout(deadline, drained).await.ok();
}

/// The budget refusal somewhere in `error`'s chain of causes (a body error
/// may come wrapped by the layers it passed).
#[must_use]
pub fn budget_exceeded<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a BudgetExceeded> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(exceeded) = error.downcast_ref::<BudgetExceeded>() {
            return Some(exceeded);
        }
        cause = error.source();
    }
    None
}

/// The bytes of request bodies being read, in all and per client.
#[derive(Debug)]
pub struct BodyBudget {
    total: usize,
    per_client: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    clients: HashMap<IpAddr, usize>,
}

impl BodyBudget {
    /// At most `total` bytes of bodies in flight, `per_client` of them
    /// from one client address.
    #[must_use]
    pub fn new(total: usize, per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            total,
            per_client,
            held: Mutex::default(),
        })
    }

    /// The bytes charged now, in all.
    #[must_use]
    pub fn held(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // A poisoned lock only lost an update of counts: keep using it.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn charge(&self, client: Option<IpAddr>, bytes: usize) -> Result<(), BudgetExceeded> {
        let mut held = self.lock();
        if held.total + bytes > self.total {
            return Err(BudgetExceeded("at once"));
        }
        if let Some(client) = client {
            let mine = held.clients.get(&client).copied().unwrap_or(0);
            if mine + bytes > self.per_client {
                return Err(BudgetExceeded("from this address"));
            }
            held.clients.insert(client, mine + bytes);
        }
        held.total += bytes;
        Ok(())
    }

    fn refund(&self, client: Option<IpAddr>, bytes: usize) {
        let mut held = self.lock();
        held.total = held.total.saturating_sub(bytes);
        if let Some(client) = client
            && let Some(mine) = held.clients.get_mut(&client)
        {
            *mine = mine.saturating_sub(bytes);
            if *mine == 0 {
                held.clients.remove(&client);
            }
        }
    }

    /// `body`, charging each chunk to this budget until it is dropped.
    #[must_use]
    pub fn wrap<B>(self: &Arc<Self>, client: Option<IpAddr>, body: B) -> BudgetedBody<B> {
        BudgetedBody {
            inner: body,
            budget: self.clone(),
            client,
            charged: 0,
        }
    }
}

/// A request body charged to a [`BodyBudget`].
#[derive(Debug)]
pub struct BudgetedBody<B> {
    inner: B,
    budget: Arc<BodyBudget>,
    client: Option<IpAddr>,
    charged: usize,
}

impl<B> Drop for BudgetedBody<B> {
    fn drop(&mut self) {
        self.budget.refund(self.client, self.charged);
    }
}

impl<B> Body for BudgetedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            let bytes = data.len();
            if let Err(exceeded) = self.budget.charge(self.client, bytes) {
                return Poll::Ready(Some(Err(Box::new(exceeded))));
            }
            self.charged += bytes;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt as _, Full};

    use super::*;

    #[tokio::test]
    async fn bodies_are_charged_while_held_and_refused_past_either_bound() {
        let budget = BodyBudget::new(10, 6);
        let one: IpAddr = [10, 0, 0, 1].into();
        let two: IpAddr = [10, 0, 0, 2].into();
        let mut first = budget.wrap(Some(one), Full::new(Bytes::from_static(b"12345")));
        assert!(first.frame().await.expect("a frame").is_ok());
        assert_eq!(budget.held(), 5);
        let refused = budget
            .wrap(Some(one), Full::new(Bytes::from_static(b"12")))
            .collect()
            .await
            .expect_err("over the client's share");
        assert_eq!(
            refused.downcast_ref::<BudgetExceeded>(),
            Some(&BudgetExceeded("from this address"))
        );
        let mut second = budget.wrap(Some(two), Full::new(Bytes::from_static(b"12345")));
        assert!(second.frame().await.expect("a frame").is_ok());
        let refused = budget
            .wrap(None, Full::new(Bytes::from_static(b"1")))
            .collect()
            .await
            .expect_err("over the whole budget");
        assert_eq!(
            refused.downcast_ref::<BudgetExceeded>(),
            Some(&BudgetExceeded("at once"))
        );
        drop((first, second));
        assert_eq!(budget.held(), 0, "dropped bodies give their bytes back");
    }
}

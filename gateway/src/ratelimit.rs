//! Per-client rate limits at the edge: a token bucket per client address,
//! taken before anything else on every route (so a flood of forged tokens
//! costs no signature checks), and one per signed-in user, taken once the
//! token is verified (so users behind one address do not share a budget
//! beyond the address's). Each holds `rate` tokens a second, at most two
//! seconds' worth, in a few shards so that concurrent requests rarely wait
//! on one lock. A request over a budget is RESOURCE_EXHAUSTED with a
//! RetryInfo saying when the next token arrives (HTTP 429 with
//! `Retry-After` at REST).

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash, RandomState},
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use safra::{contract::status, r#type::v1::ErrorReason};
use tonic::Status;

const SHARDS: usize = 16;
/// Buckets kept per shard before full (idle) ones are forgotten.
const SWEEP_ABOVE: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// What a bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Client {
    Address(IpAddr),
    User(String),
}

/// The buckets of every client address and signed-in user.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<Client, Bucket>>>,
    /// Requests refused, by `address` or `user`.
    pub(crate) refused: prometheus_client::metrics::family::Family<
        RefusedLabels,
        prometheus_client::metrics::counter::Counter,
    >,
}

/// Which budget refused a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub(crate) struct RefusedLabels {
    pub(crate) budget: &'static str,
}

impl RateLimiter {
    /// `rate` requests a second per address; 0 admits everything.
    #[must_use]
    pub fn new(rate: u32) -> Self {
        let rate = f64::from(rate);
        Self {
            rate,
            burst: rate * 2.0,
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            refused: prometheus_client::metrics::family::Family::default(),
        }
    }

    /// Takes a token of `address`'s bucket (requests without a known
    /// address are not limited here).
    ///
    /// # Errors
    /// RESOURCE_EXHAUSTED when the bucket is empty.
    pub fn admit(&self, address: Option<IpAddr>) -> Result<(), Status> {
        let Some(address) = address.filter(|_| self.rate > 0.0) else {
            return Ok(());
        };
        self.take(Client::Address(address), Instant::now())
            .map_err(|status| self.count(status, "address"))
    }

    /// Takes a token of the signed-in user `user_id`'s bucket.
    ///
    /// # Errors
    /// RESOURCE_EXHAUSTED when the bucket is empty.
    pub fn admit_user(&self, user_id: &str) -> Result<(), Status> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        self.take(Client::User(user_id.to_owned()), Instant::now())
            .map_err(|status| self.count(status, "user"))
    }

    fn count(&self, status: Status, budget: &'static str) -> Status {
        self.refused.get_or_create(&RefusedLabels { budget }).inc();
        status
    }

    fn take(&self, client: Client, now: Instant) -> Result<(), Status> {
        let index = usize::try_from(self.hasher.hash_one(&client) % SHARDS as u64).unwrap_or(0);
        let Some(shard) = self.shards.get(index) else {
            return Ok(());
        };
        // A poisoned shard only lost a bucket update: keep using it.
        let mut buckets = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() > SWEEP_ABOVE {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, bucket| {
                bucket.tokens + now.duration_since(bucket.updated).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate);
        Err(status::resource_exhausted(
            ErrorReason::RateLimited,
            "too many requests from this client; slow down",
            wait,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds_per_address() {
        let limiter = RateLimiter::new(10);
        let start = Instant::now();
        let one: IpAddr = [10, 0, 0, 1].into();
        let two: IpAddr = [10, 0, 0, 2].into();
        let (one, two) = (Client::Address(one), Client::Address(two));
        for _ in 0..20 {
            limiter.take(one.clone(), start).expect("within the burst");
        }
        let refused = limiter
            .take(one.clone(), start)
            .expect_err("over the burst");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        let delay = status::details(&refused)
            .retry_info
            .and_then(|info| info.retry_delay)
            .expect("RetryInfo");
        assert_eq!((delay.seconds, delay.nanos), (0, 100_000_000));
        limiter
            .take(two, start)
            .expect("another address has its own bucket");
        limiter
            .take(Client::User("ana".into()), start)
            .expect("a user has a bucket of their own");
        // A tenth of a second later one more token has arrived.
        limiter
            .take(one.clone(), start + Duration::from_millis(100))
            .expect("refilled");
        assert!(
            limiter
                .take(one, start + Duration::from_millis(100))
                .is_err()
        );
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let limiter = RateLimiter::new(0);
        for _ in 0..1000 {
            limiter.admit(Some([10, 0, 0, 1].into())).expect("no limit");
        }
    }
}

//! Retries for calls the contract declares safe to repeat
//! (`idempotency_level` NO_SIDE_EFFECTS or IDEMPOTENT), on UNAVAILABLE only,
//! with jittered exponential backoff, never past the caller's deadline, and
//! within a budget: retries add at most about a tenth to the load, so a
//! struggling service is not buried under them.
//!
//! tonic cannot replay a request body (its issue 733), so retries happen at
//! the typed call: the caller hands a closure that makes the call from a
//! fresh request.

use std::{
    collections::HashSet,
    future::Future,
    sync::atomic::{AtomicI64, Ordering},
    time::Duration,
};

use prost_reflect::DescriptorPool;
use tonic::{Code, Request, Response, Status};

use super::CallContext;

/// How many attempts a call may make, and how they are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The backoff before the first retry; it doubles each time.
    pub base_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(500),
        }
    }
}

/// Milli-tokens: each call deposits a tenth of a token, each retry spends a
/// whole one, and the balance is capped, so over time retries stay near 10%
/// of calls while a burst of failures spends only what was saved.
#[derive(Debug)]
pub struct RetryBudget {
    balance: AtomicI64,
}

const DEPOSIT: i64 = 100;
const WITHDRAWAL: i64 = 1000;
const CAPACITY: i64 = 10_000;

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            balance: AtomicI64::new(CAPACITY),
        }
    }
}

impl RetryBudget {
    fn deposit(&self) {
        let _ = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |balance| {
                Some((balance + DEPOSIT).min(CAPACITY))
            });
    }

    fn withdraw(&self) -> bool {
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |balance| {
                (balance >= WITHDRAWAL).then_some(balance - WITHDRAWAL)
            })
            .is_ok()
    }
}

/// Whether the method at `path` (`/pkg.Service/Method`) may be retried: its
/// contract declares it free of side effects or idempotent.
#[must_use]
pub fn is_retryable(pool: &DescriptorPool, path: &str) -> bool {
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return false;
    };
    pool.get_service_by_name(service)
        .and_then(|service| service.methods().find(|m| m.name() == method))
        .and_then(|method| {
            method
                .options()
                .get_field_by_name("idempotency_level")
                .and_then(|value| value.as_enum_number())
        })
        // NO_SIDE_EFFECTS = 1, IDEMPOTENT = 2.
        .is_some_and(|level| level == 1 || level == 2)
}

/// Retries what the contracts allow: built once per process from the
/// descriptor set, shared by every outbound call.
#[derive(Debug, Default)]
pub struct Retrier {
    retryable: HashSet<String>,
    policy: RetryPolicy,
    budget: RetryBudget,
}

impl Retrier {
    /// Reads which methods of `pool` may be retried.
    #[must_use]
    pub fn new(pool: &DescriptorPool, policy: RetryPolicy) -> Self {
        let retryable = pool
            .services()
            .flat_map(|service| {
                service
                    .methods()
                    .map(|method| format!("/{}/{}", service.full_name(), method.name()))
                    .collect::<Vec<_>>()
            })
            .filter(|path| is_retryable(pool, path))
            .collect();
        Self {
            retryable,
            policy,
            budget: RetryBudget::default(),
        }
    }

    /// Makes the call to `path` with `message`, retrying it when its
    /// contract allows, the failure is UNAVAILABLE, and attempts, budget and
    /// deadline allow. `attempt` makes one call from a fresh request.
    ///
    /// # Errors
    /// The last attempt's status; DEADLINE_EXCEEDED without a call when the
    /// context has no time left.
    pub async fn call<M, R, F, Fut>(
        &self,
        path: &str,
        context: &CallContext,
        message: M,
        mut attempt: F,
    ) -> Result<Response<R>, Status>
    where
        M: Clone,
        F: FnMut(Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let retryable = self.retryable.contains(path);
        self.budget.deposit();
        let mut tries = 1;
        loop {
            let outcome = attempt(context.outbound(message.clone())?).await;
            let Err(status) = outcome else {
                return outcome;
            };
            if !retryable || status.code() != Code::Unavailable || tries >= self.policy.max_attempts
            {
                return Err(status);
            }
            let backoff = jittered(&self.policy, tries);
            if context.remaining().is_some_and(|left| left <= backoff) || !self.budget.withdraw() {
                return Err(status);
            }
            tokio::time::sleep(backoff).await;
            tries += 1;
        }
    }
}

/// Full jitter: a random wait up to the exponential backoff of `tries`.
fn jittered(policy: &RetryPolicy, tries: u32) -> Duration {
    let exponential = policy
        .base_backoff
        .saturating_mul(2_u32.saturating_pow(tries.saturating_sub(1)))
        .min(policy.max_backoff);
    let millis = u64::try_from(exponential.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let drawn = super::random_below(usize::try_from(millis).unwrap_or(1));
    Duration::from_millis(u64::try_from(drawn).unwrap_or(0))
}

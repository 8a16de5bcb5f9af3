//! What an outbound call inherits from the inbound call that caused it: the
//! deadline (a downstream call never outlives its caller), the user's token
//! (calls on a user's behalf carry it; background work calls as the service
//! itself, known by its certificate). The trace continues by itself: the
//! channel injects the current span's `traceparent`; a context only carries
//! one when work starts from something other than a call (an event's
//! envelope).

use std::time::{Duration, Instant};

use tonic::{Request, Status, metadata::MetadataValue};

use crate::identity::auth::AuthenticatedUser;

/// Time kept back from the inbound deadline for the answer's way back.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(5);

/// The deadline, user and trace an outbound call carries.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    deadline: Option<Instant>,
    token: Option<String>,
    traceparent: Option<String>,
}

impl CallContext {
    /// The context of a call being served: its `grpc-timeout` (as a deadline
    /// counted from now) and its verified user's token.
    #[must_use]
    pub fn from_inbound<T>(inbound: &Request<T>) -> Self {
        let deadline = inbound
            .metadata()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map(|timeout| Instant::now() + timeout);
        Self {
            deadline,
            token: AuthenticatedUser::of(inbound).map(|user| user.token.clone()),
            traceparent: None,
        }
    }

    /// Work of the service itself (an event handler, a job): no user token,
    /// a fresh deadline of `timeout`.
    #[must_use]
    pub fn background(timeout: Duration) -> Self {
        Self {
            deadline: Some(Instant::now() + timeout),
            ..Self::default()
        }
    }

    /// Uses `traceparent` (an event's, say) as the parent of outbound calls
    /// instead of the current span.
    #[must_use]
    pub fn with_traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// How much of the deadline is left, if there is one.
    #[must_use]
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// An outbound request for `message`: its timeout is what is left of the
    /// deadline minus [`DEADLINE_MARGIN`], the user's token is forwarded, the
    /// trace continues.
    ///
    /// # Errors
    /// DEADLINE_EXCEEDED when no time is left: the call is not sent at all.
    pub fn outbound<M>(&self, message: M) -> Result<Request<M>, Status> {
        let mut request = Request::new(message);
        if let Some(remaining) = self.remaining() {
            let budget = remaining.saturating_sub(DEADLINE_MARGIN);
            if budget.is_zero() {
                return Err(Status::deadline_exceeded(
                    "no time is left of the caller's deadline",
                ));
            }
            request.set_timeout(budget);
        }
        if let Some(token) = &self.token
            && let Ok(value) = MetadataValue::try_from(format!("Bearer {token}"))
        {
            request.metadata_mut().insert("authorization", value);
        }
        if let Some(traceparent) = &self.traceparent
            && let Ok(value) = MetadataValue::try_from(traceparent.as_str())
        {
            request.metadata_mut().insert("traceparent", value);
        }
        Ok(request)
    }
}

/// A `grpc-timeout` value: up to eight digits and a unit (H, M, S, m, u, n).
#[must_use]
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    match unit {
        "H" => Some(Duration::from_secs(amount.saturating_mul(3600))),
        "M" => Some(Duration::from_secs(amount.saturating_mul(60))),
        "S" => Some(Duration::from_secs(amount)),
        "m" => Some(Duration::from_millis(amount)),
        "u" => Some(Duration::from_micros(amount)),
        "n" => Some(Duration::from_nanos(amount)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("500m"), Some(Duration::from_millis(500)));
        assert_eq!(parse_grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("123456789m"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
    }
}

//! Keyset pagination as every List RPC does it (`safra.type.v1.PageToken`):
//! page sizes with the shared default and maximum, opaque tokens holding
//! the last item's `(create_time, id)`, and the conversions between
//! protobuf timestamps and the database's.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use prost::Message;
use uuid::Uuid;

use crate::r#type::v1::PageToken;

/// Items on a page when the request names no size.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// The most items a page may hold.
pub const MAX_PAGE_SIZE: usize = 500;

/// A page token that this service did not make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the page token is not valid")]
pub struct InvalidPageToken;

/// Where a page starts: strictly after this `(create_time, id)` in the
/// order `create_time` desc, `id` desc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyset {
    /// `create_time` of the last item of the previous page.
    pub time: DateTime<Utc>,
    /// Its id.
    pub id: Uuid,
}

/// The page size for a request's `page_size` (0 means the default).
#[must_use]
pub fn page_size(requested: i32) -> usize {
    match usize::try_from(requested) {
        Ok(0) | Err(_) => DEFAULT_PAGE_SIZE,
        Ok(size) => size.min(MAX_PAGE_SIZE),
    }
}

/// The token of the page after `last`.
#[must_use]
pub fn encode(last: Keyset) -> String {
    URL_SAFE_NO_PAD.encode(
        PageToken {
            create_time: Some(timestamp(last.time)),
            id: last.id.to_string(),
        }
        .encode_to_vec(),
    )
}

/// The keyset in `token`; `None` for the first page (an empty token).
///
/// # Errors
/// [`InvalidPageToken`] for anything this module did not encode.
pub fn decode(token: &str) -> Result<Option<Keyset>, InvalidPageToken> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| InvalidPageToken)?;
    let token = PageToken::decode(bytes.as_slice()).map_err(|_| InvalidPageToken)?;
    let time = token
        .create_time
        .as_ref()
        .and_then(from_timestamp)
        .ok_or(InvalidPageToken)?;
    let id = Uuid::parse_str(&token.id).map_err(|_| InvalidPageToken)?;
    Ok(Some(Keyset { time, id }))
}

/// Keeps the first `size` of `rows` (queried with one more than asked) and
/// returns the next page's token, empty when nothing follows.
pub fn next_page<T>(rows: &mut Vec<T>, size: usize, keyset: impl Fn(&T) -> Keyset) -> String {
    if rows.len() <= size {
        return String::new();
    }
    rows.truncate(size);
    rows.last()
        .map(|last| encode(keyset(last)))
        .unwrap_or_default()
}

/// A database instant as a protobuf timestamp.
#[must_use]
pub fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf timestamp as an instant, if it is a valid one.
#[must_use]
pub fn from_timestamp(time: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.seconds, u32::try_from(time.nanos).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_foreign_ones_are_refused() {
        let keyset = Keyset {
            time: DateTime::from_timestamp(1_700_000_000, 123_456_000).expect("a time"),
            id: Uuid::new_v4(),
        };
        assert_eq!(decode(&encode(keyset)), Ok(Some(keyset)));
        assert_eq!(decode(""), Ok(None));
        assert_eq!(decode("not a token!"), Err(InvalidPageToken));
        assert_eq!(decode("AAAA"), Err(InvalidPageToken));
    }

    #[test]
    fn sizes_default_and_cap() {
        assert_eq!(page_size(0), 50);
        assert_eq!(page_size(-3), 50);
        assert_eq!(page_size(7), 7);
        assert_eq!(page_size(10_000), 500);
    }
}

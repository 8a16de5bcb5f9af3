//! The `/docs` page and the Content-Security-Policy of the edge's HTML: the
//! page's one inline script and one inline style are allowed by their
//! SHA-256 hashes, computed here from the page itself, so the policy never
//! needs `'unsafe-inline'` and cannot drift from the page.

use std::sync::OnceLock;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use sha2::{Digest as _, Sha256};

/// The reference page, built into the binary.
pub(crate) const PAGE: &str = include_str!("docs.html");

/// The policy sent with `/docs` and the console.
pub(crate) fn content_security_policy() -> String {
    static POLICY: OnceLock<String> = OnceLock::new();
    POLICY
        .get_or_init(|| {
            let scripts = hashes(PAGE, "<script>", "</script>");
            let styles = hashes(PAGE, "<style>", "</style>");
            format!(
                "default-src 'none'; script-src 'self'{scripts}; style-src 'self'{styles}; \
                 img-src 'self' data:; connect-src 'self'; font-src 'self'; \
                 base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
            )
        })
        .clone()
}

/// ` 'sha256-…'` for each block of `page` between `open` and `close`.
fn hashes(page: &str, open: &str, close: &str) -> String {
    let mut out = String::new();
    let mut rest = page;
    while let Some(start) = rest.find(open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(close) else {
            break;
        };
        let digest = Sha256::digest(&after.as_bytes()[..end]);
        out.push_str(&format!(" 'sha256-{}'", STANDARD.encode(digest)));
        rest = &after[end + close.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_hashes_each_inline_block_of_the_page_and_forbids_framing() {
        let policy = content_security_policy();
        assert_eq!(policy.matches("'sha256-").count(), 2, "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"));
        assert!(!policy.contains("unsafe-inline"));
        assert_eq!(
            hashes("<script>alert(1)</script>", "<script>", "</script>"),
            // printf 'alert(1)' | openssl dgst -sha256 -binary | base64
            " 'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='"
        );
    }
}

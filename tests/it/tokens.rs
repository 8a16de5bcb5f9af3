//! Access-token verification with real Ed25519 keys and signed tokens: every
//! check is exercised by a token that only that check refuses.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use safra::identity::auth::{
    AuthError, Claims, DEFAULT_ISSUER, PublicKey, SigningKey, StaticKeys, TokenSigner,
    TokenVerifier,
};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(0))
        .unwrap_or(0)
}

struct Keys {
    signer: TokenSigner,
    published: Arc<RwLock<Vec<PublicKey>>>,
}

fn keys() -> Keys {
    let key = SigningKey::generate("key-1").expect("a key");
    let published = Arc::new(RwLock::new(vec![key.public_key().clone()]));
    Keys {
        signer: TokenSigner::new(key, DEFAULT_ISSUER),
        published,
    }
}

fn verifier(keys: &Keys, refresh: Duration) -> TokenVerifier {
    TokenVerifier::with_refresh_interval(
        DEFAULT_ISSUER,
        Arc::new(StaticKeys(keys.published.clone())),
        refresh,
    )
}

fn claims(overrides: impl FnOnce(&mut Claims)) -> Claims {
    let mut claims = Claims {
        iss: DEFAULT_ISSUER.into(),
        aud: "safra".into(),
        sub: "7c0f5a52-6f0c-4a53-9a7e-2f3e4c1b9d10".into(),
        role: "investor".into(),
        exp: now() + 900,
        iat: now(),
        nbf: now(),
        jti: "jti-1".into(),
    };
    overrides(&mut claims);
    claims
}

#[tokio::test]
async fn a_well_signed_token_verifies_once_then_comes_from_the_cache() {
    let keys = keys();
    let verifier = verifier(&keys, Duration::from_secs(5));
    let (token, issued) = keys
        .signer
        .sign("user-1", "producer", Duration::from_secs(900))
        .expect("signed");
    assert_eq!(verifier.verify(&token).await, Ok(issued.clone()));
    assert_eq!(verifier.cache_hit_count(), 0);
    assert_eq!(verifier.verify(&token).await, Ok(issued));
    assert_eq!(
        verifier.cache_hit_count(),
        1,
        "the second check is a cache hit"
    );
    assert_eq!(verifier.fetch_count(), 1);
}

async fn refused(keys: &Keys, token: &str) -> AuthError {
    verifier(keys, Duration::from_secs(5))
        .verify(token)
        .await
        .expect_err("the token must be refused")
}

#[tokio::test]
async fn an_expired_token_is_refused_as_expired() {
    let keys = keys();
    let token = keys
        .signer
        .sign_claims(&claims(|c| {
            c.exp = now() - 120;
            c.nbf = now() - 1000;
        }))
        .expect("signed");
    assert_eq!(refused(&keys, &token).await, AuthError::Expired);
}

#[tokio::test]
async fn a_token_not_yet_valid_is_refused() {
    let keys = keys();
    let token = keys
        .signer
        .sign_claims(&claims(|c| c.nbf = now() + 120))
        .expect("signed");
    assert!(matches!(
        refused(&keys, &token).await,
        AuthError::Invalid(_)
    ));
}

#[tokio::test]
async fn a_small_clock_skew_is_tolerated() {
    let keys = keys();
    let token = keys
        .signer
        .sign_claims(&claims(|c| c.nbf = now() + 5))
        .expect("signed");
    assert!(
        verifier(&keys, Duration::from_secs(5))
            .verify(&token)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn another_issuer_or_audience_is_refused() {
    let keys = keys();
    let foreign_issuer = keys
        .signer
        .sign_claims(&claims(|c| c.iss = "evil".into()))
        .expect("signed");
    assert!(matches!(
        refused(&keys, &foreign_issuer).await,
        AuthError::Invalid(_)
    ));
    let foreign_audience = keys
        .signer
        .sign_claims(&claims(|c| c.aud = "payments".into()))
        .expect("signed");
    assert!(matches!(
        refused(&keys, &foreign_audience).await,
        AuthError::Invalid(_)
    ));
}

#[tokio::test]
async fn an_unknown_role_is_refused() {
    let keys = keys();
    let token = keys
        .signer
        .sign_claims(&claims(|c| c.role = "root".into()))
        .expect("signed");
    assert!(matches!(
        refused(&keys, &token).await,
        AuthError::Invalid(_)
    ));
}

#[tokio::test]
async fn a_tampered_payload_is_refused() {
    let keys = keys();
    let token = keys.signer.sign_claims(&claims(|_| {})).expect("signed");
    let parts: Vec<&str> = token.split('.').collect();
    let admin = URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&claims(|c| c.role = "admin".into())).expect("json"));
    let forged = format!("{}.{admin}.{}", parts[0], parts[2]);
    assert!(matches!(
        refused(&keys, &forged).await,
        AuthError::Invalid(_)
    ));
}

#[tokio::test]
async fn alg_none_is_refused() {
    let keys = keys();
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"key-1"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(|_| {})).expect("json"));
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        assert!(
            matches!(refused(&keys, &token).await, AuthError::Invalid(_)),
            "{token}"
        );
    }
}

#[tokio::test]
async fn hmac_with_the_public_key_as_secret_is_refused() {
    let keys = keys();
    let public = keys.signer.key().public_key().clone();
    let raw = URL_SAFE_NO_PAD.decode(&public.x).expect("base64url");
    for secret in [raw.as_slice(), public.x.as_bytes()] {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("key-1".into());
        let token = jsonwebtoken::encode(
            &header,
            &claims(|_| {}),
            &jsonwebtoken::EncodingKey::from_secret(secret).expect("an HMAC key"),
        )
        .expect("an HS256 token");
        assert!(matches!(
            refused(&keys, &token).await,
            AuthError::Invalid(_)
        ));
    }
}

#[tokio::test]
async fn a_token_signed_by_an_unpublished_key_is_refused() {
    let keys = keys();
    let rogue = TokenSigner::new(SigningKey::generate("key-1").expect("key"), DEFAULT_ISSUER);
    let token = rogue.sign_claims(&claims(|_| {})).expect("signed");
    assert!(matches!(
        refused(&keys, &token).await,
        AuthError::Invalid(_)
    ));
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_keys_and_finds_a_rotated_key() {
    let keys = keys();
    let verifier = verifier(&keys, Duration::ZERO);
    let (first, _) = keys
        .signer
        .sign("u", "investor", Duration::from_secs(60))
        .expect("signed");
    verifier.verify(&first).await.expect("first key verifies");

    let rotated = SigningKey::generate("key-2").expect("key");
    keys.published
        .write()
        .expect("lock")
        .push(rotated.public_key().clone());
    let signer = TokenSigner::new(rotated, DEFAULT_ISSUER);
    let (second, _) = signer
        .sign("u", "investor", Duration::from_secs(60))
        .expect("signed");
    verifier
        .verify(&second)
        .await
        .expect("the rotated key is fetched");
    assert_eq!(verifier.fetch_count(), 2);
    verifier
        .verify(&first)
        .await
        .expect("the old key still verifies");
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_the_keys_at_most_once() {
    let keys = keys();
    let verifier = verifier(&keys, Duration::from_secs(5));
    for index in 0..50 {
        let stranger = TokenSigner::new(
            SigningKey::generate(format!("made-up-{index}")).expect("key"),
            DEFAULT_ISSUER,
        );
        let token = stranger.sign_claims(&claims(|_| {})).expect("signed");
        assert!(verifier.verify(&token).await.is_err());
    }
    assert_eq!(
        verifier.fetch_count(),
        1,
        "one fetch within the refresh interval"
    );
}

#[test]
fn bearer_values_are_parsed_strictly() {
    assert_eq!(safra::identity::auth::bearer("Bearer abc"), Some("abc"));
    assert_eq!(safra::identity::auth::bearer("bearer abc"), Some("abc"));
    assert_eq!(safra::identity::auth::bearer("Basic abc"), None);
    assert_eq!(safra::identity::auth::bearer("Bearer "), None);
    assert_eq!(safra::identity::auth::bearer("abc"), None);
}

#[tokio::test]
async fn refusals_say_what_is_wrong_without_the_decoders_words_or_the_callers_input() {
    let keys = keys();
    let header = |json: &str| URL_SAFE_NO_PAD.encode(json.as_bytes());
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(|_| {})).expect("json"));
    let (good, _) = keys
        .signer
        .sign("u", "investor", Duration::from_secs(60))
        .expect("signed");
    // One character in the middle of the signature changed (the last one
    // could make the base64 itself invalid).
    let at = good.len() - 10;
    let swapped = if &good[at..=at] == "A" { "B" } else { "A" };
    let tampered_signature = format!("{}{swapped}{}", &good[..at], &good[at + 1..]);
    let cases = [
        (
            format!(
                "{}.{payload}.",
                header(r#"{"alg":"none","typ":"JWT","kid":"key-1"}"#)
            ),
            "not in the accepted form",
        ),
        ("not.a.jwt!".to_owned(), "not a JWT"),
        ("%%%".to_owned(), "not a JWT"),
        (
            format!(
                "{}.{payload}.c2ln",
                header(r#"{"alg":"EdDSA","typ":"JWT","kid":"a-kid-made-up-by-the-caller"}"#)
            ),
            "not one of the signing keys",
        ),
        (tampered_signature, "signature does not verify"),
    ];
    for (token, says) in cases {
        let AuthError::Invalid(message) = refused(&keys, &token).await else {
            panic!("{token}: refused as invalid");
        };
        assert!(message.contains(says), "{token}: {message}");
        for internal in [
            "variant",
            "expected one of",
            "Base64",
            "base64 error",
            "Invalid last symbol",
            "a-kid-made-up-by-the-caller",
            "InvalidSignature",
        ] {
            assert!(!message.contains(internal), "{token}: {message}");
        }
    }
}

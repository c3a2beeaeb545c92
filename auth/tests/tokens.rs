//! Every way a token can be wrong, and the one way it is right.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rally_auth::*;

fn issuer() -> TokenIssuer {
    TokenIssuer::new(SigningKey::generate())
}

#[test]
fn a_good_token_names_its_player() {
    let issuer = issuer();
    let verifier = TokenVerifier::with_defaults(issuer.public_key());
    let now = SystemTime::now();
    let token = issuer.mint(42, Some(1500.0), now);
    let got = verifier.verify(&token).unwrap();
    assert_eq!(got.player_id, 42);
    assert_eq!(got.mmr, Some(1500.0));
    let now_s = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(got.expires_at, now_s + DEFAULT_TTL.as_secs());
    assert_eq!(verifier.verify(&issuer.mint(7, None, now)).unwrap().mmr, None);
}

#[test]
fn an_expired_token_is_refused() {
    let issuer = issuer().with_ttl(Duration::from_secs(60));
    let verifier = TokenVerifier::with_defaults(issuer.public_key());
    let long_ago = SystemTime::now() - Duration::from_secs(3600);
    assert_eq!(verifier.verify(&issuer.mint(1, None, long_ago)), Err(TokenError::Expired));
}

#[test]
fn a_token_from_another_key_is_refused() {
    let verifier = TokenVerifier::with_defaults(issuer().public_key());
    let token = issuer().mint(1, None, SystemTime::now());
    assert_eq!(verifier.verify(&token), Err(TokenError::BadSignature));
}

#[test]
fn issuer_and_audience_must_match() {
    let key = SigningKey::generate();
    let public = key.public_key();
    let token = TokenIssuer::new(key).with_names("someone-else", DEFAULT_AUDIENCE).mint(1, None, SystemTime::now());
    assert_eq!(TokenVerifier::with_defaults(public).verify(&token), Err(TokenError::WrongIssuer));

    let key = SigningKey::generate();
    let public = key.public_key();
    let token = TokenIssuer::new(key).with_names(DEFAULT_ISSUER, "another-service").mint(1, None, SystemTime::now());
    assert_eq!(TokenVerifier::with_defaults(public).verify(&token), Err(TokenError::WrongAudience));
}

fn b64(json: serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(json.to_string())
}

fn claims() -> serde_json::Value {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600;
    serde_json::json!({"sub": "1", "iss": DEFAULT_ISSUER, "aud": DEFAULT_AUDIENCE, "iat": 0, "exp": exp})
}

#[test]
fn alg_none_is_refused() {
    let verifier = TokenVerifier::with_defaults(issuer().public_key());
    let token = format!("{}.{}.", b64(serde_json::json!({"alg": "none", "typ": "JWT"})), b64(claims()));
    let err = verifier.verify(&token).unwrap_err();
    assert!(matches!(err, TokenError::WrongAlgorithm | TokenError::Malformed(_)), "{err:?}");
}

#[test]
fn hmac_signed_with_the_public_key_is_refused() {
    // Algorithm confusion: an attacker who knows the public key signs with HS256 using it
    // as the HMAC secret.
    let issuer = issuer();
    let public = issuer.public_key();
    let raw = URL_SAFE_NO_PAD.decode(public.to_string()).unwrap();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims(),
        &jsonwebtoken::EncodingKey::from_secret(&raw),
    )
    .unwrap();
    assert_eq!(TokenVerifier::with_defaults(public).verify(&token), Err(TokenError::WrongAlgorithm));
}

#[test]
fn garbled_tokens_are_malformed() {
    let issuer = issuer();
    let verifier = TokenVerifier::with_defaults(issuer.public_key());
    let good = issuer.mint(1, None, SystemTime::now());
    for bad in ["", "x", "a.b.c", "...", &good[..good.len() / 2], &format!("{good}x")] {
        let err = verifier.verify(bad).unwrap_err();
        assert!(matches!(err, TokenError::Malformed(_) | TokenError::BadSignature), "{bad:?}: {err:?}");
    }
    // Flipping a character of the payload breaks the signature.
    let (head, rest) = good.split_once('.').unwrap();
    let (payload, sig) = rest.split_once('.').unwrap();
    let mut p = payload.as_bytes().to_vec();
    p[3] = if p[3] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{head}.{}.{sig}", String::from_utf8(p).unwrap());
    assert!(verifier.verify(&tampered).is_err());
}

#[test]
fn a_non_numeric_subject_is_malformed() {
    // Signed correctly, but `sub` is not a player id.
    let key = SigningKey::generate();
    let public = key.public_key();
    let mut c = claims();
    c["sub"] = "alice".into();
    let der = rcgen::KeyPair::from_pem(key.to_pem()).unwrap().serialize_der();
    let encoding = jsonwebtoken::EncodingKey::from_ed_der(&der);
    let token =
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA), &c, &encoding).unwrap();
    assert!(matches!(TokenVerifier::with_defaults(public).verify(&token), Err(TokenError::Malformed(_))));
}

#[test]
fn keys_survive_a_file_and_text() {
    let dir = std::env::temp_dir().join(format!("rally-auth-test-{}", std::process::id()));
    let path = dir.join("nested").join("key.pem");
    let first = SigningKey::load_or_create(&path).unwrap();
    let again = SigningKey::load_or_create(&path).unwrap();
    assert_eq!(first.public_key(), again.public_key());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    std::fs::remove_dir_all(&dir).unwrap();

    let public = first.public_key();
    assert_eq!(PublicKey::from_base64(&public.to_string()).unwrap(), public);
    assert!(PublicKey::from_base64("not base64!").is_err());
    assert!(PublicKey::from_base64("AAAA").is_err());
    assert!(SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").is_err());
}

#[test]
fn the_cache_accepts_only_what_was_verified_and_still_checks_expiry() {
    let issuer = issuer().with_ttl(Duration::from_secs(60));
    let verifier = TokenVerifier::with_defaults(issuer.public_key()).with_cache(2);
    let token = issuer.mint(9, None, SystemTime::now());
    assert_eq!(verifier.verify(&token).unwrap().player_id, 9);
    assert_eq!(verifier.verify(&token).unwrap().player_id, 9, "a hit");
    // A tampered copy is not the same text: it is verified, and refused. (A character well
    // inside the signature: the last one also carries padding bits a lenient decoder
    // ignores.)
    let at = token.len() - 10;
    let swap = if &token[at..=at] == "A" { "B" } else { "A" };
    let tampered = format!("{}{swap}{}", &token[..at], &token[at + 1..]);
    assert!(verifier.verify(&tampered).is_err());
    // Expired tokens are refused on a miss and on a hit alike.
    let old = issuer.mint(9, None, SystemTime::now() - Duration::from_secs(3600));
    assert_eq!(verifier.verify(&old), Err(TokenError::Expired));
    let soon = TokenIssuer::new(SigningKey::generate()).with_ttl(Duration::from_secs(0));
    let v = TokenVerifier::with_defaults(soon.public_key()).with_cache(8);
    let t = soon.mint(1, None, SystemTime::now() - LEEWAY - Duration::from_secs(1));
    assert_eq!(v.verify(&t), Err(TokenError::Expired));
    // Over capacity it starts over and keeps working.
    for player in 0..5 {
        let t = issuer.mint(player, None, SystemTime::now());
        assert_eq!(verifier.verify(&t).unwrap().player_id, player);
    }
}

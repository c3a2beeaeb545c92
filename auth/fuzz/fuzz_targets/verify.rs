//! Arbitrary bytes as a bearer token, and a real token with bytes spliced into it, through
//! `TokenVerifier::verify`: an edge reads tokens from untrusted clients. None may panic,
//! and only the untouched real token may verify.
#![no_main]

use std::sync::LazyLock;
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use rally_auth::{SigningKey, TokenIssuer, TokenVerifier};

struct Keys {
    verifier: TokenVerifier,
    token: String,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let issuer = TokenIssuer::new(SigningKey::generate());
    let verifier = TokenVerifier::with_defaults(issuer.public_key());
    let token = issuer.mint(42, Some(1500.0), SystemTime::now());
    Keys { verifier, token }
});

fuzz_target!(|data: &[u8]| {
    let keys = &*KEYS;
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = keys.verifier.verify(text);
    }
    // The real token with the input written over it from a position the first byte picks.
    let mut token = keys.token.clone().into_bytes();
    let at = data.first().map_or(0, |&b| usize::from(b) * token.len() / 256);
    let patch = data.get(1..).unwrap_or_default();
    let end = (at + patch.len()).min(token.len());
    token[at..end].copy_from_slice(&patch[..end - at]);
    if let Ok(text) = std::str::from_utf8(&token)
        && keys.verifier.verify(text).is_ok()
    {
        assert_eq!(text, keys.token, "a changed token verified");
    }
});

//! Rally's access tokens: short-lived EdDSA (Ed25519) JWTs.
//!
//! Only the token issuer holds the private key: the admin API when accounts exist, and
//! `rally token` in dev. Edges hold the public key only and verify signature, expiry,
//! issuer and audience. The algorithm is pinned to EdDSA, so `alg: none` and algorithm
//! confusion (an HMAC token "signed" with the public key) are refused.
//!
//! Claims: `sub` is the player id in decimal, plus `iss`, `aud`, `iat`, `exp`, and, in
//! dev only, `mmr`: the rating `rally token` was asked to put in. Production edges ignore
//! it and read ratings from the store.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The issuer Rally's tokens name unless configured otherwise.
pub const DEFAULT_ISSUER: &str = "rally";
/// The audience edges expect unless configured otherwise.
pub const DEFAULT_AUDIENCE: &str = "rally-edge";
/// How long an access token lives by default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);
/// Clock skew tolerated between issuer and edge when checking `exp`.
pub const LEEWAY: Duration = Duration::from_secs(5);

/// What an access token says, once verified.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessToken {
    /// The player.
    pub player_id: u64,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
    /// The rating a dev token carries; `None` in tokens from the admin API.
    pub mmr: Option<f64>,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    aud: String,
    iat: u64,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mmr: Option<f64>,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Past its `exp` (plus [`LEEWAY`]).
    #[error("token expired")]
    Expired,
    /// The signature does not verify with this edge's key.
    #[error("token signature does not verify")]
    BadSignature,
    /// Not an EdDSA token (`alg: none`, HMAC, RSA, …).
    #[error("token algorithm is not EdDSA")]
    WrongAlgorithm,
    /// `iss` is not the configured issuer.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// `aud` is not the configured audience.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// Not a JWT, or its claims are missing or of the wrong type.
    #[error("token is malformed: {0}")]
    Malformed(String),
}

/// Why a key could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The PEM is not an Ed25519 PKCS#8 private key.
    #[error("not an Ed25519 private key: {0}")]
    BadPrivateKey(String),
    /// The text is not a base64url Ed25519 public key (32 bytes).
    #[error("not an Ed25519 public key (32 bytes, base64url)")]
    BadPublicKey,
    /// Reading or writing the key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
}

/// An Ed25519 public key: what an edge needs to verify tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// From its base64url form (as printed by `Display`, and as in a JWK's `x`).
    pub fn from_base64(text: &str) -> Result<PublicKey, KeyError> {
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| KeyError::BadPublicKey)?;
        Ok(PublicKey(bytes.try_into().map_err(|_| KeyError::BadPublicKey)?))
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

/// An Ed25519 signing key.
#[derive(Clone)]
pub struct SigningKey {
    encoding: EncodingKey,
    public: PublicKey,
    pem: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("public", &self.public.to_string()).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate() -> SigningKey {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("the system RNG makes Ed25519 keys");
        Self::from_pair(&pair).expect("a generated Ed25519 key is well formed")
    }

    /// From a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pem(pem: &str) -> Result<SigningKey, KeyError> {
        let pair = rcgen::KeyPair::from_pem(pem).map_err(|e| KeyError::BadPrivateKey(e.to_string()))?;
        if !pair.is_compatible(&rcgen::PKCS_ED25519) {
            return Err(KeyError::BadPrivateKey("the key is not Ed25519".into()));
        }
        Self::from_pair(&pair)
    }

    fn from_pair(pair: &rcgen::KeyPair) -> Result<SigningKey, KeyError> {
        let public: [u8; 32] = pair
            .public_key_raw()
            .try_into()
            .map_err(|_| KeyError::BadPrivateKey("public key is not 32 bytes".into()))?;
        Ok(SigningKey {
            encoding: EncodingKey::from_ed_der(&pair.serialize_der()),
            public: PublicKey(public),
            pem: pair.serialize_pem(),
        })
    }

    /// Reads the key at `path`, or makes one and writes it there (owner-only permissions)
    /// if the file does not exist. This is how dev processes share one key.
    pub fn load_or_create(path: &Path) -> Result<SigningKey, KeyError> {
        let io = |source| KeyError::Io { path: path.display().to_string(), source };
        match std::fs::read_to_string(path) {
            Ok(pem) => Self::from_pem(&pem),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                write_private(path, key.pem.as_bytes()).map_err(io)?;
                Ok(key)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The key as PKCS#8 PEM.
    pub fn to_pem(&self) -> &str {
        &self.pem
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // `create_new`: two processes starting at once must not overwrite each other's key.
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new().write(true).create_new(true).open(path)?.write_all(bytes)
}

/// Signs access tokens.
#[derive(Debug)]
pub struct TokenIssuer {
    key: SigningKey,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl TokenIssuer {
    /// An issuer with the default issuer, audience and lifetime.
    pub fn new(key: SigningKey) -> TokenIssuer {
        TokenIssuer { key, issuer: DEFAULT_ISSUER.into(), audience: DEFAULT_AUDIENCE.into(), ttl: DEFAULT_TTL }
    }

    /// Sets the lifetime of the tokens it mints.
    pub fn with_ttl(mut self, ttl: Duration) -> TokenIssuer {
        self.ttl = ttl;
        self
    }

    /// Sets the `iss` and `aud` claims.
    pub fn with_names(mut self, issuer: &str, audience: &str) -> TokenIssuer {
        self.issuer = issuer.into();
        self.audience = audience.into();
        self
    }

    /// The key's public half, for edges.
    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// A token for `player_id`, issued at `now`; `mmr` only for dev tokens.
    pub fn mint(&self, player_id: u64, mmr: Option<f64>, now: SystemTime) -> String {
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = Claims {
            sub: player_id.to_string(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat,
            exp: iat + self.ttl.as_secs(),
            mmr,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.key.encoding)
            .expect("EdDSA signing of plain claims does not fail")
    }
}

/// Verifies access tokens with a public key.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
    /// Tokens already verified, by their exact text (see `with_cache`).
    cache: Option<VerifiedCache>,
}

/// Verified tokens by their exact text. A signature check costs tens of microseconds; an
/// API that sees the same token on every request of a session checks it once. Only a
/// byte-identical token hits, so nothing unverified is ever accepted; expiry is checked
/// on every hit. When full it starts over, which bounds memory without bookkeeping.
struct VerifiedCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, AccessToken>>,
    capacity: usize,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// Accepts tokens signed by `key` for `issuer` and `audience`.
    pub fn new(key: PublicKey, issuer: &str, audience: &str) -> TokenVerifier {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY.as_secs();
        TokenVerifier { key: DecodingKey::from_ed_der(&key.0), validation, cache: None }
    }

    /// Remembers up to `capacity` verified tokens, so a token seen again skips the
    /// signature check (its expiry is still checked).
    pub fn with_cache(mut self, capacity: usize) -> TokenVerifier {
        self.cache = Some(VerifiedCache { entries: Default::default(), capacity: capacity.max(1) });
        self
    }

    /// With the default issuer and audience.
    pub fn with_defaults(key: PublicKey) -> TokenVerifier {
        Self::new(key, DEFAULT_ISSUER, DEFAULT_AUDIENCE)
    }

    /// Checks signature, algorithm, expiry, issuer and audience.
    pub fn verify(&self, token: &str) -> Result<AccessToken, TokenError> {
        let Some(cache) = &self.cache else { return self.verify_uncached(token) };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let lock = || cache.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = lock().get(token).cloned() {
            return if now > hit.expires_at + LEEWAY.as_secs() { Err(TokenError::Expired) } else { Ok(hit) };
        }
        let verified = self.verify_uncached(token)?;
        let mut entries = lock();
        if entries.len() >= cache.capacity {
            entries.clear();
        }
        entries.insert(token.to_owned(), verified.clone());
        Ok(verified)
    }

    fn verify_uncached(&self, token: &str) -> Result<AccessToken, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::WrongAlgorithm,
            ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
            ErrorKind::InvalidAudience => TokenError::WrongAudience,
            _ => TokenError::Malformed(e.to_string()),
        })?;
        let claims = data.claims;
        let player_id = claims.sub.parse().map_err(|_| TokenError::Malformed("`sub` is not a player id".into()))?;
        if claims.mmr.is_some_and(|m| !m.is_finite() || m < 0.0) {
            return Err(TokenError::Malformed("`mmr` is not a finite non-negative number".into()));
        }
        Ok(AccessToken { player_id, expires_at: claims.exp, mmr: claims.mmr })
    }
}

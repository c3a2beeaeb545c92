//! Rate limits (governor, GCRA): per client IP on every route, harder per IP on login and
//! registration, and per account on authenticated routes. Over a limit: 429 with
//! `Retry-After`.

use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::AppState;
use crate::error::ApiError;

/// A sustained rate and a burst.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Requests replenished per period.
    pub per_period: NonZeroU32,
    /// The period.
    pub period: Duration,
    /// Requests allowed at once.
    pub burst: NonZeroU32,
}

impl Rate {
    /// `n` per second with a burst of `burst`.
    pub fn per_second(n: u32, burst: u32) -> Rate {
        Rate { per_period: nz(n), period: Duration::from_secs(1), burst: nz(burst) }
    }

    /// `n` per minute with a burst of `burst`.
    pub fn per_minute(n: u32, burst: u32) -> Rate {
        Rate { per_period: nz(n), period: Duration::from_secs(60), burst: nz(burst) }
    }

    fn quota(self) -> Quota {
        let interval = self.period / self.per_period.get();
        Quota::with_period(interval.max(Duration::from_nanos(1))).expect("non-zero period").allow_burst(self.burst)
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).expect("at least one")
}

/// The limits an admin API enforces.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimits {
    /// Every request, per client IP.
    pub per_ip: Rate,
    /// Login and registration attempts, per client IP (on top of `per_ip`).
    pub login_per_ip: Rate,
    /// Authenticated requests, per account.
    pub per_account: Rate,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            per_ip: Rate::per_second(100, 200),
            login_per_ip: Rate::per_minute(20, 10),
            per_account: Rate::per_second(20, 40),
        }
    }
}

type Keyed<K> = RateLimiter<K, HashMapStateStore<K>, DefaultClock>;

pub(crate) struct Limiters {
    per_ip: Keyed<IpAddr>,
    login_per_ip: Keyed<IpAddr>,
    per_account: Keyed<u64>,
    clock: DefaultClock,
}

impl Limiters {
    pub fn new(limits: &RateLimits) -> Limiters {
        Limiters {
            per_ip: RateLimiter::hashmap(limits.per_ip.quota()),
            login_per_ip: RateLimiter::hashmap(limits.login_per_ip.quota()),
            per_account: RateLimiter::hashmap(limits.per_account.quota()),
            clock: DefaultClock::default(),
        }
    }

    fn check<K: Hash + Eq + Clone>(&self, limiter: &Keyed<K>, key: &K) -> Result<(), ApiError> {
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            ApiError::RateLimited { retry_after_s: wait.as_secs() + u64::from(wait.subsec_nanos() > 0) }
        })
    }

    pub fn account(&self, account: u64) -> Result<(), ApiError> {
        self.check(&self.per_account, &account)
    }

    pub fn login(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.check(&self.login_per_ip, &ip)
    }

    /// Forgets keys whose limits are fully replenished, so memory follows active clients.
    pub fn shrink(&self) {
        self.per_ip.retain_recent();
        self.login_per_ip.retain_recent();
        self.per_account.retain_recent();
    }
}

/// The client's IP (unspecified when the server runs without connect info, as in tests
/// that call the router directly).
fn ip_of(extensions: &axum::http::Extensions) -> IpAddr {
    let ip = extensions.get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    match ip {
        // One IPv6 client usually holds a whole /64: limit the prefix, not each address.
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut bytes = v6.octets();
                bytes[8..].fill(0);
                IpAddr::V6(bytes.into())
            }
        },
        v4 => v4,
    }
}

/// The per-IP limit, on every route.
pub(crate) async fn per_ip(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let ip = ip_of(req.extensions());
    if let Err(e) = state.inner.limits.check(&state.inner.limits.per_ip, &ip) {
        return e.into_response();
    }
    next.run(req).await
}

/// The client's IP as an extractor (see `client_ip`).
pub(crate) struct ClientIp(pub IpAddr);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(ip_of(&parts.extensions)))
    }
}

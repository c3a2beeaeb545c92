//! The admin API through its router (`oneshot`) and over a real socket, on a fresh SQLite
//! store per test: happy paths and abuse.

mod common;

use common::*;

#[tokio::test]
async fn register_then_read_and_change_the_profile() {
    let ctx = app(|_| {}).await;
    let tokens = ctx.register("Alice").await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    let access = tokens["access_token"].as_str().unwrap();

    let me = ctx.call(Method::GET, "/v1/profile/me", Some(access), None).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    assert_eq!(me.body["account_id"], tokens["account_id"]);
    assert_eq!(me.body["display_name"], "Alice");
    assert_eq!(me.body["preferred_region"], Value::Null);
    assert_eq!(me.body["preferences"], json!({}));

    let patch = json!({"display_name": "Al", "preferred_region": "eu", "preferences": {"voice": true}});
    let me = ctx.call(Method::PATCH, "/v1/profile/me", Some(access), Some(patch)).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    assert_eq!((me.body["display_name"].as_str(), me.body["preferred_region"].as_str()), (Some("Al"), Some("eu")));
    assert_eq!(me.body["preferences"], json!({"voice": true}));
    let me = ctx.call(Method::PATCH, "/v1/profile/me", Some(access), Some(json!({"preferred_region": null}))).await;
    assert_eq!(me.body["preferred_region"], Value::Null, "null clears");
    assert_eq!(me.body["display_name"], "Al", "left out stays");

    let bad = json!({"display_name": "", "preferred_region": "moon", "preferences": [1, 2]});
    let r = ctx.call(Method::PATCH, "/v1/profile/me", Some(access), Some(bad)).await;
    assert_eq!((r.status, r.code()), (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"));
    assert_eq!(r.fields(), ["display_name", "preferred_region", "preferences"]);
    let huge = json!({"preferences": {"blob": "x".repeat(5000)}});
    let r = ctx.call(Method::PATCH, "/v1/profile/me", Some(access), Some(huge)).await;
    assert_eq!(r.fields(), ["preferences"]);
}

#[tokio::test]
async fn registration_refuses_duplicates_and_bad_fields() {
    let ctx = app(|_| {}).await;
    ctx.register("alice").await;
    let dup = json!({"username": "ALICE", "email": "other@example.com", "password": "correct horse"});
    let r = ctx.call(Method::POST, "/v1/auth/register", None, Some(dup)).await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "conflict"));
    assert!(r.body["error"]["message"].as_str().unwrap().contains("username"));
    let dup = json!({"username": "alice2", "email": "Alice@Example.com", "password": "correct horse"});
    let r = ctx.call(Method::POST, "/v1/auth/register", None, Some(dup)).await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "conflict"));
    assert!(r.body["error"]["message"].as_str().unwrap().contains("email"));

    let bad = json!({"username": "a b", "email": "nope", "password": "short", "display_name": ""});
    let r = ctx.call(Method::POST, "/v1/auth/register", None, Some(bad)).await;
    assert_eq!((r.status, r.code()), (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"));
    assert_eq!(r.fields(), ["username", "email", "password", "display_name"]);
}

#[tokio::test]
async fn malformed_and_oversized_bodies() {
    let ctx = app(|c| c.body_limit = 1024).await;
    let r = ctx.raw(Method::POST, "/v1/auth/login", None, Some("{not json"), Some("application/json")).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "bad_request"));
    let r = ctx
        .raw(Method::POST, "/v1/auth/login", None, Some(r#"{"login": 5, "password": "x"}"#), Some("application/json"))
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"));
    let r = ctx
        .raw(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(r#"{"login": "a", "password": "x", "admin": true}"#),
            Some("application/json"),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
        "unknown fields are refused"
    );
    let r = ctx
        .raw(Method::POST, "/v1/auth/login", None, Some(r#"{"login": "a", "password": "x"}"#), Some("text/plain"))
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"));
    let big = json!({"login": "a".repeat(2000), "password": "x"}).to_string();
    let r = ctx.raw(Method::POST, "/v1/auth/login", None, Some(&big), Some("application/json")).await;
    assert_eq!((r.status, r.code()), (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"));
    let r = ctx.call(Method::GET, "/v1/nothing-here", None, None).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "not_found"));
    let r = ctx.call(Method::DELETE, "/v1/auth/login", None, None).await;
    assert_eq!((r.status, r.code()), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
}

#[tokio::test]
async fn login_refuses_wrong_passwords_and_unknown_users_alike() {
    let ctx = app(|_| {}).await;
    ctx.register("alice").await;
    let ok = ctx
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"login": "ALICE@example.com", "password": "correct horse"})),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    let wrong = ctx
        .call(Method::POST, "/v1/auth/login", None, Some(json!({"login": "alice", "password": "wrong horse"})))
        .await;
    let unknown =
        ctx.call(Method::POST, "/v1/auth/login", None, Some(json!({"login": "bob", "password": "wrong horse"}))).await;
    assert_eq!((wrong.status, wrong.code()), (StatusCode::UNAUTHORIZED, "bad_credentials"));
    assert_eq!((unknown.status, unknown.code()), (StatusCode::UNAUTHORIZED, "bad_credentials"));
    assert_eq!(wrong.body["error"]["message"], unknown.body["error"]["message"], "no hint which was wrong");
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_login() {
    let ctx = app(|_| {}).await;
    let first = ctx.register("alice").await;
    let r1 = first["refresh_token"].as_str().unwrap();
    let second = ctx.call(Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": r1}))).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    let r2 = second.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    let me = ctx.call(Method::GET, "/v1/profile/me", second.body["access_token"].as_str(), None).await;
    assert_eq!(me.status, StatusCode::OK);

    // Someone replays the first token: the whole family goes.
    let replay = ctx.call(Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": r1}))).await;
    assert_eq!((replay.status, replay.code()), (StatusCode::UNAUTHORIZED, "refresh_token_reused"));
    let after = ctx.call(Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": r2}))).await;
    assert_eq!((after.status, after.code()), (StatusCode::UNAUTHORIZED, "invalid_refresh_token"));
    let junk = ctx.call(Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": "junk"}))).await;
    assert_eq!((junk.status, junk.code()), (StatusCode::UNAUTHORIZED, "invalid_refresh_token"));
}

#[tokio::test]
async fn bad_access_tokens_are_refused() {
    let ctx = app(|_| {}).await;
    let tokens = ctx.register("alice").await;
    let id = tokens["account_id"].as_u64().unwrap();
    let same_key = || TokenIssuer::new(SigningKey::from_pem(&ctx.key_pem).unwrap());
    let expired =
        same_key().with_ttl(Duration::from_secs(1)).mint(id, None, SystemTime::now() - Duration::from_secs(3600));
    let other_key = TokenIssuer::new(SigningKey::generate()).mint(id, None, SystemTime::now());
    let alg_none = {
        use base64::Engine;
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let claims =
            json!({"sub": id.to_string(), "iss": "rally", "aud": "rally-edge", "iat": 0, "exp": 4_000_000_000u64});
        format!("{}.{}.", b64(json!({"alg": "none"})), b64(claims))
    };
    for (name, token) in
        [("expired", expired.as_str()), ("other key", &other_key), ("alg none", &alg_none), ("garbled", "x.y.z")]
    {
        let r = ctx.call(Method::GET, "/v1/profile/me", Some(token), None).await;
        assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "unauthenticated"), "{name}");
    }
    let r = ctx.call(Method::GET, "/v1/profile/me", None, None).await;
    assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "unauthenticated"));
    let r = ctx.raw(Method::GET, "/v1/profile/me", None, None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn rate_limits_trip_with_retry_after() {
    let ctx = app(|c| {
        c.limits.login_per_ip = Rate::per_minute(1, 3);
        c.limits.per_account = Rate::per_minute(1, 5);
    })
    .await;
    let tokens = ctx.register("alice").await; // one login attempt of three
    let login = json!({"login": "alice", "password": "correct horse"});
    for _ in 0..2 {
        assert_eq!(ctx.call(Method::POST, "/v1/auth/login", None, Some(login.clone())).await.status, StatusCode::OK);
    }
    let r = ctx.call(Method::POST, "/v1/auth/login", None, Some(login)).await;
    assert_eq!((r.status, r.code()), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"));
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");

    let access = tokens["access_token"].as_str();
    for _ in 0..5 {
        assert_eq!(ctx.call(Method::GET, "/v1/profile/me", access, None).await.status, StatusCode::OK);
    }
    let r = ctx.call(Method::GET, "/v1/profile/me", access, None).await;
    assert_eq!((r.status, r.code()), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"));
    assert!(r.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn openapi_lists_every_route_the_router_serves() {
    let ctx = app(|_| {}).await;
    let spec = ctx.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(spec.status, StatusCode::OK);
    assert!(spec.body["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut documented = Vec::new();
    for (path, item) in spec.body["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    documented.sort();
    let served = [
        "DELETE /v1/party/queue",
        "DELETE /v1/party/{id}/leave",
        "GET /healthz",
        "GET /metrics",
        "GET /readyz",
        "GET /v1/leaderboard",
        "GET /v1/leaderboard/{season}",
        "GET /v1/matches/history",
        "GET /v1/party/{id}",
        "GET /v1/profile/me",
        "GET /v1/session/{match_id}",
        "GET /v1/ws/party/{party_id}",
        "PATCH /v1/profile/me",
        "POST /v1/auth/login",
        "POST /v1/auth/refresh",
        "POST /v1/auth/register",
        "POST /v1/match/{match_id}/accept",
        "POST /v1/party",
        "POST /v1/party/queue",
        "POST /v1/party/{id}/join",
        "POST /v1/party/{id}/ready",
        "POST /v1/servers",
        "POST /v1/servers/heartbeat",
        "POST /v1/session/{match_id}/heartbeat",
        "POST /v1/session/{match_id}/result",
    ];
    assert_eq!(documented, served, "the spec and the router come from the same registrations");
    // And every documented route is really served (anything but 404/405).
    for route in &documented {
        let (method, path) = route.split_once(' ').unwrap();
        let r = ctx.call(method.parse().unwrap(), path, None, Some(json!({}))).await;
        assert!(![StatusCode::NOT_FOUND, StatusCode::METHOD_NOT_ALLOWED].contains(&r.status), "{route}: {}", r.status);
    }
    for docs in ["/docs/", "/redoc"] {
        let r = ctx.call(Method::GET, docs, None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{docs}");
        assert!(r.text.contains("<html") || r.text.contains("<!DOCTYPE"), "{docs} serves a page");
    }
}

#[tokio::test]
async fn health_readiness_metrics_and_request_ids() {
    let ctx = app(|_| {}).await;
    assert_eq!(ctx.call(Method::GET, "/healthz", None, None).await.text, "ok");
    assert_eq!(ctx.call(Method::GET, "/readyz", None, None).await.text, "ready");
    ctx.register("alice").await;
    let metrics = ctx.call(Method::GET, "/metrics", None, None).await;
    assert!(metrics.text.contains("rally_admin_requests_total"), "{}", metrics.text);
    assert!(metrics.text.contains("route=\"/v1/auth/register\""), "{}", metrics.text);
    // A caller's request id is kept; a bad one is replaced.
    let req = Request::get("/healthz").header("x-request-id", "abc-123").body(Body::empty()).unwrap();
    let res = ctx.router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
    let req = Request::get("/healthz").header("x-request-id", "bad id!").body(Body::empty()).unwrap();
    let res = ctx.router.clone().oneshot(req).await.unwrap();
    assert_ne!(res.headers()["x-request-id"], "bad id!");
}

#[tokio::test]
async fn over_a_real_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ctx = app(|c| c.limits.login_per_ip = Rate::per_minute(1, 1)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(rally_admin::serve(listener, ctx.router.clone(), async move {
        let _ = stopped.await;
    }));
    let request = |body: String| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "POST /v1/auth/register HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let body = json!({"username": "alice", "email": "a@example.com", "password": "correct horse"}).to_string();
    let first = request(body.clone()).await;
    assert!(first.starts_with("HTTP/1.1 201"), "{first}");
    // The login limit is keyed by the socket's IP: the second attempt from 127.0.0.1 trips it.
    let second = request(body).await;
    assert!(second.starts_with("HTTP/1.1 429"), "{second}");
    assert!(second.to_lowercase().contains("retry-after:"), "{second}");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn readiness_follows_the_store() {
    let ctx = app(|_| {}).await;
    assert_eq!(ctx.call(Method::GET, "/readyz", None, None).await.status, StatusCode::OK);
    ctx.store.close().await;
    let r = ctx.call(Method::GET, "/readyz", None, None).await;
    assert_eq!((r.status, r.code()), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"));
    assert_eq!(ctx.call(Method::GET, "/healthz", None, None).await.status, StatusCode::OK, "alive all the same");
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let ctx = app(|c| c.cors_origins = vec!["https://play.example".into()]).await;
    let preflight = |origin: &'static str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/v1/profile/me")
            .header("origin", origin)
            .header("access-control-request-method", "PATCH")
            .header("access-control-request-headers", "authorization,content-type")
            .body(Body::empty())
            .unwrap()
    };
    let ok = ctx.router.clone().oneshot(preflight("https://play.example")).await.unwrap();
    assert_eq!(ok.headers()["access-control-allow-origin"], "https://play.example");
    let other = ctx.router.clone().oneshot(preflight("https://evil.example")).await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
}

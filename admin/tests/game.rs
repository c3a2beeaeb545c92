//! The game loop over the admin API: game servers register and heartbeat, a formed match
//! gets a session, its server reports the result once, ratings move, and history and
//! leaderboards show it. With the abuse around each: wrong keys and servers, strangers,
//! duplicate and conflicting results, sessions whose server dies.

mod common;

use common::*;
use rally_sessions::FormedMatch;

/// Polls `check` until it holds; bounds a hang, times nothing.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn register_server(ctx: &Ctx, datacenter: &str, capacity: u32) -> (u64, String) {
    let body = json!({"datacenter": datacenter, "address": "10.0.0.7:7777", "capacity": capacity});
    let r = ctx.call(Method::POST, "/v1/servers", Some(SERVER_KEY), Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(r.body["heartbeat_interval_ms"].as_u64().unwrap() > 0);
    (r.body["server_id"].as_u64().unwrap(), r.body["token"].as_str().unwrap().to_owned())
}

/// What the edge does when the engine forms a match.
fn form(ctx: &Ctx, match_id: u64, mode: &str, teams: Vec<Vec<u64>>) {
    let formed = FormedMatch { match_id, mode: mode.into(), datacenter: "eu-west".into(), formed_at_ms: 1, teams };
    ctx.sessions.allocate(&formed).expect("a server has room");
}

#[tokio::test]
async fn a_match_is_played_reported_once_and_shows_in_history_and_on_the_leaderboard() {
    let ctx = app(|_| {}).await;
    let p = ctx.players(&["ann", "ben", "cat"]).await;
    let (_, server) = register_server(&ctx, "eu-west", 4).await;
    form(&ctx, 77, "duel", vec![vec![p[0].id], vec![p[1].id]]);

    // The server learns of the match by heartbeat; the players see the session.
    let hb = ctx.call(Method::POST, "/v1/servers/heartbeat", Some(&server), None).await;
    assert_eq!(hb.status, StatusCode::OK, "{}", hb.text);
    assert_eq!(hb.body["sessions"], json!([{"match_id": 77, "mode": "duel", "teams": [[p[0].id], [p[1].id]]}]));
    let seen = ctx.call(Method::GET, "/v1/session/77", Some(&p[0].token), None).await;
    assert_eq!(seen.status, StatusCode::OK, "{}", seen.text);
    assert_eq!(
        (seen.body["state"].as_str(), seen.body["server_addr"].as_str()),
        (Some("active"), Some("10.0.0.7:7777"))
    );
    assert_eq!(seen.body["connect_token"].as_str().unwrap().len(), 64);
    let other = ctx.call(Method::GET, "/v1/session/77", Some(&p[1].token), None).await;
    assert_ne!(seen.body["connect_token"], other.body["connect_token"]);
    let stranger = ctx.call(Method::GET, "/v1/session/77", Some(&p[2].token), None).await;
    assert_eq!((stranger.status, stranger.code()), (StatusCode::FORBIDDEN, "forbidden"));
    let unknown = ctx.call(Method::GET, "/v1/session/78", Some(&p[0].token), None).await;
    assert_eq!((unknown.status, unknown.code()), (StatusCode::NOT_FOUND, "unknown_session"));
    let hb = ctx.call(Method::POST, "/v1/session/77/heartbeat", Some(&server), None).await;
    assert_eq!(hb.status, StatusCode::NO_CONTENT, "{}", hb.text);

    // Ben wins. The answer carries the new ratings; a repeat changes nothing.
    let result =
        ctx.call(Method::POST, "/v1/session/77/result", Some(&server), Some(json!({"placements": [2, 1]}))).await;
    assert_eq!(result.status, StatusCode::OK, "{}", result.text);
    assert_eq!((result.body["recorded"].as_bool(), result.body["season"].as_str()), (Some(true), Some("s1")));
    let ratings = result.body["ratings"].as_array().unwrap();
    let (ann, ben) = (&ratings[0], &ratings[1]);
    assert_eq!((ann["player_id"].as_u64(), ben["player_id"].as_u64()), (Some(p[0].id), Some(p[1].id)));
    assert!(ben["rating_after"].as_f64() > ann["rating_after"].as_f64(), "{}", result.text);
    assert!(ben["mu"].as_f64().unwrap() > 1500.0 && ann["mu"].as_f64().unwrap() < 1500.0);
    let again =
        ctx.call(Method::POST, "/v1/session/77/result", Some(&server), Some(json!({"placements": [2, 1]}))).await;
    assert_eq!((again.status, again.body["recorded"].as_bool()), (StatusCode::OK, Some(false)), "{}", again.text);
    let conflicting =
        ctx.call(Method::POST, "/v1/session/77/result", Some(&server), Some(json!({"placements": [1, 2]}))).await;
    assert_eq!((conflicting.status, conflicting.code()), (StatusCode::CONFLICT, "conflicting_result"));
    let late = ctx.call(Method::POST, "/v1/session/77/heartbeat", Some(&server), None).await;
    assert_eq!((late.status, late.code()), (StatusCode::CONFLICT, "session_ended"));
    let seen = ctx.call(Method::GET, "/v1/session/77", Some(&p[0].token), None).await;
    assert_eq!((seen.body["state"].as_str(), &seen.body["placements"]), (Some("finished"), &json!([2, 1])));

    // Stored behind, then visible.
    ctx.game.flush().await;
    let history = ctx.call(Method::GET, "/v1/matches/history", Some(&p[0].token), None).await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.text);
    let matches = history.body["matches"].as_array().unwrap();
    assert_eq!(matches.len(), 1);
    assert_eq!((matches[0]["match_id"].as_u64(), matches[0]["place"].as_u64()), (Some(77), Some(2)));
    assert_eq!(matches[0]["rating_after"], ann["rating_after"]);
    let bens = format!("/v1/matches/history?player_id={}&mode=duel", p[1].id);
    let history = ctx.call(Method::GET, &bens, Some(&p[0].token), None).await;
    assert_eq!(history.body["matches"][0]["place"], 1);

    let board = ctx.call(Method::GET, "/v1/leaderboard?mode=duel", Some(&p[2].token), None).await;
    assert_eq!(board.status, StatusCode::OK, "{}", board.text);
    assert_eq!(board.body["season"]["name"], "s1");
    let standings = board.body["standings"].as_array().unwrap();
    assert_eq!(standings.len(), 2);
    assert_eq!((standings[0]["rank"].as_u64(), standings[0]["player_id"].as_u64()), (Some(1), Some(p[1].id)));
    assert_eq!(standings[0]["display_name"], "ben");
    assert_eq!(standings[0]["rating"], ben["rating_after"]);
    let mine = ctx.call(Method::GET, "/v1/leaderboard/s1?mode=duel&around=me&limit=1", Some(&p[0].token), None).await;
    assert_eq!(mine.status, StatusCode::OK, "{}", mine.text);
    let ranks: Vec<u64> =
        mine.body["standings"].as_array().unwrap().iter().map(|s| s["rank"].as_u64().unwrap()).collect();
    assert_eq!(ranks, [1, 2]);
    let off = ctx.call(Method::GET, "/v1/leaderboard?mode=duel&around=me", Some(&p[2].token), None).await;
    assert_eq!(off.status, StatusCode::NOT_FOUND, "cat has not played");
    let squad = ctx.call(Method::GET, "/v1/leaderboard?mode=squad", Some(&p[2].token), None).await;
    assert_eq!(squad.body["standings"], json!([]));
}

#[tokio::test]
async fn history_pages_with_a_cursor() {
    let ctx = app(|_| {}).await;
    let p = ctx.players(&["ann", "ben"]).await;
    let (_, server) = register_server(&ctx, "eu-west", 100).await;
    for match_id in 1..=5 {
        form(&ctx, match_id, "duel", vec![vec![p[0].id], vec![p[1].id]]);
        let path = format!("/v1/session/{match_id}/result");
        let r = ctx.call(Method::POST, &path, Some(&server), Some(json!({"placements": [1, 2]}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    ctx.game.flush().await;
    let mut seen = Vec::new();
    let mut path = "/v1/matches/history?limit=2".to_owned();
    loop {
        let page = ctx.call(Method::GET, &path, Some(&p[0].token), None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        seen.extend(page.body["matches"].as_array().unwrap().iter().map(|m| m["match_id"].as_u64().unwrap()));
        match page.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/matches/history?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    // Newest first. Results in one millisecond tie on time and fall back to match id.
    assert_eq!(seen, [5, 4, 3, 2, 1]);
    // Ann won all five: her rating climbed every time.
    let r = ctx.call(Method::GET, "/v1/matches/history?limit=5", Some(&p[0].token), None).await;
    let after: Vec<f64> =
        r.body["matches"].as_array().unwrap().iter().map(|m| m["rating_after"].as_f64().unwrap()).collect();
    assert!(after.windows(2).all(|w| w[0] > w[1]), "{after:?}");
    for bad in ["cursor=nope", "limit=0", "limit=101", "mode=chess", "unknown=1"] {
        let r = ctx.call(Method::GET, &format!("/v1/matches/history?{bad}"), Some(&p[0].token), None).await;
        assert!(r.status.is_client_error(), "{bad}: {}", r.text);
    }
    let anonymous = ctx.call(Method::GET, "/v1/matches/history", None, None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn game_servers_must_prove_who_they_are() {
    let ctx = app(|_| {}).await;
    let body = json!({"datacenter": "eu-west", "address": "10.0.0.7:7777", "capacity": 2});
    let no_key = ctx.call(Method::POST, "/v1/servers", None, Some(body.clone())).await;
    assert_eq!((no_key.status, no_key.code()), (StatusCode::UNAUTHORIZED, "unauthenticated"));
    let wrong = ctx.call(Method::POST, "/v1/servers", Some("guess"), Some(body.clone())).await;
    assert_eq!((wrong.status, wrong.code()), (StatusCode::UNAUTHORIZED, "unauthenticated"));
    let bad_dc = json!({"datacenter": "moon-base", "address": "x:1", "capacity": 2});
    let r = ctx.call(Method::POST, "/v1/servers", Some(SERVER_KEY), Some(bad_dc)).await;
    assert_eq!((r.status, r.fields()), (StatusCode::UNPROCESSABLE_ENTITY, vec!["datacenter"]));
    let no_room = json!({"datacenter": "eu-west", "address": "x:1", "capacity": 0});
    let r = ctx.call(Method::POST, "/v1/servers", Some(SERVER_KEY), Some(no_room)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let extra = json!({"datacenter": "eu-west", "address": "x:1", "capacity": 1, "admin": true});
    let r = ctx.call(Method::POST, "/v1/servers", Some(SERVER_KEY), Some(extra)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);

    let p = ctx.players(&["ann", "ben"]).await;
    let (_, host) = register_server(&ctx, "eu-west", 1).await;
    let (_, other) = register_server(&ctx, "eu-west", 1).await;
    form(&ctx, 9, "duel", vec![vec![p[0].id], vec![p[1].id]]);
    let result = json!({"placements": [1, 2]});
    let r = ctx.call(Method::POST, "/v1/session/9/result", Some(&other), Some(result.clone())).await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "wrong_server"));
    let r = ctx.call(Method::POST, "/v1/session/9/heartbeat", Some(&other), None).await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "wrong_server"));
    let r = ctx.call(Method::POST, "/v1/session/404/heartbeat", Some(&host), None).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "unknown_session"));
    let r = ctx.call(Method::POST, "/v1/session/9/result", Some(&p[0].token), Some(result.clone())).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "bad_server_token"),
        "a player token is no server token"
    );
    let forged = format!("{}x", &host[..host.len() - 1]);
    let r = ctx.call(Method::POST, "/v1/session/9/result", Some(&forged), Some(result.clone())).await;
    assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "bad_server_token"));
    for bad in
        [json!({"placements": [1]}), json!({"placements": [0, 1]}), json!({"winner": 0}), json!({"placements": "1,2"})]
    {
        let r = ctx.call(Method::POST, "/v1/session/9/result", Some(&host), Some(bad.clone())).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {}", r.text);
    }
    let r = ctx
        .raw(Method::POST, "/v1/session/9/result", Some(&host), Some("{\"placements\": [1,"), Some("application/json"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // None of that recorded anything: the host's result still counts.
    let r = ctx.call(Method::POST, "/v1/session/9/result", Some(&host), Some(result)).await;
    assert_eq!((r.status, r.body["recorded"].as_bool()), (StatusCode::OK, Some(true)), "{}", r.text);
}

#[tokio::test]
async fn registration_is_off_without_a_server_key() {
    let ctx = app_with(|_| {}, |game, _| game.server_key = None).await;
    let body = json!({"datacenter": "eu-west", "address": "x:1", "capacity": 1});
    let r = ctx.call(Method::POST, "/v1/servers", Some("anything"), Some(body)).await;
    assert_eq!((r.status, r.code()), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"));
}

#[tokio::test]
async fn a_session_whose_server_dies_fails_and_takes_no_result() {
    let ctx = app_with(|_| {}, |_, sessions| sessions.heartbeat_timeout_ms = 300).await;
    let p = ctx.players(&["ann", "ben"]).await;
    let (_, server) = register_server(&ctx, "eu-west", 2).await;
    form(&ctx, 5, "duel", vec![vec![p[0].id], vec![p[1].id]]);
    // The server goes quiet.
    eventually("the session to fail", async || {
        let r = ctx.call(Method::GET, "/v1/session/5", Some(&p[0].token), None).await;
        r.body["state"] == "failed"
    })
    .await;
    let r = ctx.call(Method::POST, "/v1/session/5/result", Some(&server), Some(json!({"placements": [1, 2]}))).await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "session_ended"));
    let r = ctx.call(Method::POST, "/v1/session/5/heartbeat", Some(&server), None).await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "session_ended"));
    let metrics = ctx.call(Method::GET, "/metrics", None, None).await;
    assert!(metrics.text.contains("rally_sessions_failed_total"), "{}", metrics.text);
}

#[tokio::test]
async fn results_are_refused_while_the_store_is_behind_and_stay_retryable() {
    let ctx = app_with(
        |_| {},
        |game, _| {
            game.write_behind.queue_capacity = 1;
            game.write_behind.writers = 1;
        },
    )
    .await;
    let p = ctx.players(&["ann", "ben"]).await;
    let (_, server) = register_server(&ctx, "eu-west", 100).await;
    let result = json!({"placements": [1, 2]});
    form(&ctx, 1, "duel", vec![vec![p[0].id], vec![p[1].id]]);
    let r = ctx.call(Method::POST, "/v1/session/1/result", Some(&server), Some(result.clone())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    ctx.game.flush().await;
    // The database goes away: the worker holds its batch and retries; the queue fills.
    ctx.store.close().await;
    let mut refused = None;
    for match_id in 2..=10 {
        form(&ctx, match_id, "duel", vec![vec![p[0].id], vec![p[1].id]]);
        let r = ctx
            .call(Method::POST, &format!("/v1/session/{match_id}/result"), Some(&server), Some(result.clone()))
            .await;
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(r.code(), "unavailable");
            refused = Some(match_id);
            break;
        }
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let refused = refused.expect("a full queue refuses results");
    // The refused result left the session open for the server to retry.
    let r = ctx.call(Method::GET, &format!("/v1/session/{refused}"), Some(&p[0].token), None).await;
    assert_eq!(r.body["state"], "active", "{}", r.text);
}

//! Parties over REST and WebSocket, against a real engine runtime: leader rules, the size
//! cap, ready checks, queueing as one ticket, a member leaving or dropping while queued,
//! chat and its limits, and the abuse around each.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn eu() -> Value {
    json!({"ready": true, "rtt_ms": {"eu-west": 20.0}})
}

/// `leader` makes a `mode` party and the others join; its id.
async fn party(ctx: &Ctx, mode: &str, leader: &Player, others: &[&Player]) -> u64 {
    let r = ctx.call(Method::POST, "/v1/party", Some(&leader.token), Some(json!({"mode": mode}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["party_id"].as_u64().unwrap();
    for m in others {
        let r = ctx.call(Method::POST, &format!("/v1/party/{id}/join"), Some(&m.token), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    id
}

async fn ready_all(ctx: &Ctx, id: u64, who: &[&Player]) {
    for m in who {
        let r = ctx.call(Method::POST, &format!("/v1/party/{id}/ready"), Some(&m.token), Some(eu())).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
}

#[tokio::test]
async fn membership_rules_and_their_errors() {
    let ctx = app(|_| {}).await;
    let m = ctx.players(&["ann", "ben", "cat", "dan", "eve"]).await;
    let id = party(&ctx, "squad", &m[0], &[&m[1], &m[2]]).await;
    let path = |p: &str| format!("/v1/party/{id}{p}");

    let full = ctx.call(Method::POST, &path("/join"), Some(&m[3].token), None).await;
    assert_eq!((full.status, full.code()), (StatusCode::CONFLICT, "party_full"), "squad teams hold 3");
    let twice = ctx.call(Method::POST, &path("/join"), Some(&m[1].token), None).await;
    assert_eq!((twice.status, twice.code()), (StatusCode::CONFLICT, "already_in_party"));
    let stranger = ctx.call(Method::GET, &path(""), Some(&m[3].token), None).await;
    assert_eq!((stranger.status, stranger.code()), (StatusCode::FORBIDDEN, "forbidden"));
    let nowhere = ctx.call(Method::POST, "/v1/party/999/join", Some(&m[3].token), None).await;
    assert_eq!((nowhere.status, nowhere.code()), (StatusCode::NOT_FOUND, "unknown_party"));
    let bad_mode = ctx.call(Method::POST, "/v1/party", Some(&m[3].token), Some(json!({"mode": "chess"}))).await;
    assert_eq!((bad_mode.status, bad_mode.fields()), (StatusCode::UNPROCESSABLE_ENTITY, vec!["mode"]));
    let second = ctx.call(Method::POST, "/v1/party", Some(&m[1].token), Some(json!({"mode": "duel"}))).await;
    assert_eq!((second.status, second.code()), (StatusCode::CONFLICT, "already_in_party"));

    // Queueing: the leader only, everyone ready, RTTs that name real datacenters.
    let not_leader = ctx.call(Method::POST, "/v1/party/queue", Some(&m[1].token), None).await;
    assert_eq!((not_leader.status, not_leader.code()), (StatusCode::FORBIDDEN, "not_the_leader"));
    let not_ready = ctx.call(Method::POST, "/v1/party/queue", Some(&m[0].token), None).await;
    assert_eq!((not_ready.status, not_ready.code()), (StatusCode::CONFLICT, "not_all_ready"));
    let no_party = ctx.call(Method::POST, "/v1/party/queue", Some(&m[4].token), None).await;
    assert_eq!((no_party.status, no_party.code()), (StatusCode::NOT_FOUND, "unknown_party"));
    for bad in [
        json!({"ready": true}),
        json!({"rtt_ms": {"moon": 1.0}}),
        json!({"rtt_ms": {"eu-west": -1.0}}),
        json!({"rtt": 1}),
    ] {
        let r = ctx.call(Method::POST, &path("/ready"), Some(&m[1].token), Some(bad.clone())).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {}", r.text);
    }
    let outsider = ctx.call(Method::POST, &path("/ready"), Some(&m[4].token), Some(eu())).await;
    assert_eq!(outsider.status, StatusCode::FORBIDDEN);

    // The leader leaves: the next member leads; the last one out ends the party.
    let left = ctx.call(Method::DELETE, &path("/leave"), Some(&m[0].token), None).await;
    assert_eq!(left.status, StatusCode::NO_CONTENT, "{}", left.text);
    let view = ctx.call(Method::GET, &path(""), Some(&m[1].token), None).await;
    assert_eq!(view.body["leader_id"].as_u64(), Some(m[1].id));
    assert_eq!(view.body["members"].as_array().unwrap().len(), 2);
    let again = ctx.call(Method::DELETE, &path("/leave"), Some(&m[0].token), None).await;
    assert_eq!((again.status, again.code()), (StatusCode::FORBIDDEN, "not_a_member"));
    for who in [&m[1], &m[2]] {
        ctx.call(Method::DELETE, &path("/leave"), Some(&who.token), None).await;
    }
    let gone = ctx.call(Method::GET, &path(""), Some(&m[1].token), None).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let fresh = ctx.call(Method::POST, "/v1/party", Some(&m[1].token), Some(json!({"mode": "duel"}))).await;
    assert_eq!(fresh.status, StatusCode::CREATED, "free to start another: {}", fresh.text);
}

#[tokio::test]
async fn two_parties_queue_as_one_ticket_each_and_are_matched_against_each_other() {
    let ctx = app(|_| {}).await;
    let m = ctx.players(&["ann", "amy", "abe", "bob", "bea", "bud"]).await;
    let a = party(&ctx, "squad", &m[0], &[&m[1], &m[2]]).await;
    let b = party(&ctx, "squad", &m[3], &[&m[4], &m[5]]).await;
    ready_all(&ctx, a, &[&m[0], &m[1], &m[2]]).await;
    ready_all(&ctx, b, &[&m[3], &m[4], &m[5]]).await;

    let url = |party: u64, token: &str| format!("/v1/ws/party/{party}?access_token={token}");
    let server = Served::start(&ctx).await;
    let mut ws = server.ws(&url(a, &m[1].token)).await;
    assert_eq!(next(&mut ws).await["type"], "snapshot");

    let queued = ctx.call(Method::POST, "/v1/party/queue", Some(&m[0].token), None).await;
    assert_eq!(queued.status, StatusCode::OK, "{}", queued.text);
    assert_eq!(queued.body["party"]["state"], "queued");
    let twice = ctx.call(Method::POST, "/v1/party/queue", Some(&m[0].token), None).await;
    assert_eq!((twice.status, twice.code()), (StatusCode::CONFLICT, "party_queued"));
    let join = ctx.call(Method::POST, &format!("/v1/party/{b}/join"), Some(&m[0].token), None).await;
    assert_eq!(join.status, StatusCode::CONFLICT);
    assert_eq!(next(&mut ws).await["type"], "queued");
    let r = ctx.call(Method::POST, "/v1/party/queue", Some(&m[3].token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let found = next(&mut ws).await;
    assert_eq!(found["type"], "match_found", "{found}");
    assert_eq!(found["mode"], "squad");
    let mut teams: Vec<Vec<u64>> = serde_json::from_value(found["teams"].clone()).unwrap();
    for team in &mut teams {
        team.sort();
    }
    teams.sort();
    assert_eq!(teams, [vec![m[0].id, m[1].id, m[2].id], vec![m[3].id, m[4].id, m[5].id]], "parties stay whole");
    // Back to idle, and everyone readies again before the next queue.
    let view = ctx.call(Method::GET, &format!("/v1/party/{a}"), Some(&m[0].token), None).await;
    assert_eq!(view.body["state"], "idle");
    assert!(view.body["members"].as_array().unwrap().iter().all(|x| x["ready"] == false), "{}", view.text);
    server.stop().await;
}

/// The next event of one of `types`, skipping others.
async fn next_of(ws: &mut Ws, types: &[&str]) -> Value {
    loop {
        let event = next(ws).await;
        if types.iter().any(|t| event["type"] == *t) {
            return event;
        }
    }
}

#[tokio::test]
async fn ready_checks_confirm_parties_or_send_the_innocent_party_back_to_the_queue() {
    let ctx = app(|_| {}).await;
    let m = ctx.players(&["ann", "amy", "bob", "bea"]).await;
    let body = json!({"datacenter": "eu-west", "address": "10.1.1.1:7777", "capacity": 10});
    let r = ctx.call(Method::POST, "/v1/servers", Some(SERVER_KEY), Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let a = party(&ctx, "pair-rc", &m[0], &[&m[1]]).await;
    let b = party(&ctx, "pair-rc", &m[2], &[&m[3]]).await;
    let server = Served::start(&ctx).await;
    let mut ws_a = server.ws(&format!("/v1/ws/party/{a}?access_token={}", m[1].token)).await;
    let mut ws_b = server.ws(&format!("/v1/ws/party/{b}?access_token={}", m[3].token)).await;
    let queue_both = async || {
        ready_all(&ctx, a, &[&m[0], &m[1]]).await;
        ready_all(&ctx, b, &[&m[2], &m[3]]).await;
        for leader in [&m[0], &m[2]] {
            let r = ctx.call(Method::POST, "/v1/party/queue", Some(&leader.token), None).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        }
    };

    // Everyone accepts: the server comes in match_confirmed.
    queue_both().await;
    let found = next_of(&mut ws_a, &["match_found"]).await;
    assert!(found["accept_by_unix_ms"].as_u64().unwrap() > 0 && found["server_addr"] == "", "{found}");
    let match_id = found["match_id"].as_u64().unwrap();
    let accept = format!("/v1/match/{match_id}/accept");
    let stranger = ctx.players(&["cat"]).await;
    let r = ctx.call(Method::POST, &accept, Some(&stranger[0].token), Some(json!({"accept": true}))).await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "not_in_match"));
    for who in &m {
        let r = ctx.call(Method::POST, &accept, Some(&who.token), Some(json!({"accept": true}))).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    }
    let confirmed = next_of(&mut ws_a, &["match_confirmed"]).await;
    assert_eq!(
        (confirmed["server_addr"].as_str(), confirmed["match_id"].as_u64()),
        (Some("10.1.1.1:7777"), Some(match_id))
    );
    assert_eq!(confirmed["connect_token"].as_str().map(str::len), Some(64), "amy's own token: {confirmed}");
    let r = ctx.call(Method::POST, &accept, Some(&m[0].token), Some(json!({"accept": false}))).await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "no_ready_check"));
    assert_eq!(next_of(&mut ws_b, &["match_confirmed"]).await["match_id"].as_u64(), Some(match_id));

    // Bea declines: her party stays out (and cools down); Ann's goes back in the queue.
    queue_both().await;
    let found = next_of(&mut ws_b, &["match_found"]).await;
    let match_id = found["match_id"].as_u64().unwrap();
    let r = ctx
        .call(Method::POST, &format!("/v1/match/{match_id}/accept"), Some(&m[3].token), Some(json!({"accept": false})))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let gone = next_of(&mut ws_b, &["match_abandoned"]).await;
    assert_eq!((gone["requeued"].as_bool(), &gone["refused"]), (Some(false), &json!([m[3].id])), "{gone}");
    let back = next_of(&mut ws_a, &["match_abandoned"]).await;
    assert_eq!(back["requeued"].as_bool(), Some(true), "{back}");
    assert_eq!(next_of(&mut ws_a, &["queued"]).await["type"], "queued");
    let view = ctx.call(Method::GET, &format!("/v1/party/{a}"), Some(&m[0].token), None).await;
    assert_eq!(view.body["state"], "queued");
    ready_all(&ctx, b, &[&m[2], &m[3]]).await;
    let r = ctx.call(Method::POST, "/v1/party/queue", Some(&m[2].token), None).await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "cooldown"), "{}", r.text);
    server.stop().await;
}

#[tokio::test]
async fn leaving_or_dropping_while_queued_cancels_the_ticket_and_tells_the_others() {
    let ctx = app(|_| {}).await;
    let m = ctx.players(&["ann", "ben", "cat"]).await;
    let id = party(&ctx, "squad", &m[0], &[&m[1], &m[2]]).await;
    ready_all(&ctx, id, &[&m[0], &m[1], &m[2]]).await;
    let server = Served::start(&ctx).await;
    let url = |token: &str| format!("/v1/ws/party/{id}?access_token={token}");
    let mut ann = server.ws(&url(&m[0].token)).await;
    let mut ben = server.ws(&url(&m[1].token)).await;
    next(&mut ann).await;
    next(&mut ben).await;

    assert_eq!(ctx.call(Method::POST, "/v1/party/queue", Some(&m[0].token), None).await.status, StatusCode::OK);
    assert_eq!(next(&mut ann).await["type"], "queued");
    // Ben's connection drops: the party leaves the queue, and Ann hears why.
    drop(ben);
    let dequeued = next(&mut ann).await;
    assert_eq!((dequeued["type"].as_str(), dequeued["reason"].as_str()), (Some("dequeued"), Some("member_dropped")));
    let view = ctx.call(Method::GET, &format!("/v1/party/{id}"), Some(&m[0].token), None).await;
    assert_eq!(view.body["state"], "idle");

    // Queued again; Cat leaves: cancelled again, and Ann sees Cat go.
    assert_eq!(ctx.call(Method::POST, "/v1/party/queue", Some(&m[0].token), None).await.status, StatusCode::OK);
    assert_eq!(next(&mut ann).await["type"], "queued");
    ctx.call(Method::DELETE, &format!("/v1/party/{id}/leave"), Some(&m[2].token), None).await;
    let out = next(&mut ann).await;
    assert_eq!((out["type"].as_str(), out["reason"].as_str()), (Some("dequeued"), Some("member_left")));
    assert_eq!(next(&mut ann).await["type"], "member_left");
    // The leader dequeues when not queued: refused clearly.
    let r = ctx.call(Method::DELETE, "/v1/party/queue", Some(&m[0].token), None).await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "party_not_queued"));
    server.stop().await;
}

#[tokio::test]
async fn chat_reaches_the_party_within_its_limits() {
    let ctx = app(|_| {}).await;
    let m = ctx.players(&["ann", "ben", "cat"]).await;
    let id = party(&ctx, "squad", &m[0], &[&m[1]]).await;
    let server = Served::start(&ctx).await;
    let url = |token: &str| format!("/v1/ws/party/{id}?access_token={token}");
    let mut ann = server.ws(&url(&m[0].token)).await;
    let mut ben = server.ws(&url(&m[1].token)).await;
    next(&mut ann).await;
    next(&mut ben).await;

    ann.send(Message::text(json!({"type": "chat", "text": "gl hf"}).to_string())).await.unwrap();
    let heard = next(&mut ben).await;
    assert_eq!((heard["type"].as_str(), heard["text"].as_str()), (Some("chat"), Some("gl hf")));
    assert_eq!(heard["from"].as_u64(), Some(m[0].id));
    assert_eq!(next(&mut ann).await["type"], "chat", "the sender hears it too");

    ann.send(Message::text(json!({"type": "chat", "text": "x".repeat(501)}).to_string())).await.unwrap();
    assert_eq!(next(&mut ann).await["code"], "chat_too_long");
    ann.send(Message::text("not json")).await.unwrap();
    assert_eq!(next(&mut ann).await["code"], "bad_message");
    // A flood: the burst passes, then refusals, then the socket is closed (1008).
    let mut codes = Vec::new();
    for i in 0..40 {
        if ann.send(Message::text(json!({"type": "chat", "text": format!("spam {i}")}).to_string())).await.is_err() {
            break;
        }
    }
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ann.next()).await.expect("the server answers") {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                codes.push(v["code"].as_str().unwrap_or(v["type"].as_str().unwrap()).to_owned());
            }
            Some(Ok(Message::Close(frame))) => {
                assert_eq!(u16::from(frame.expect("a close frame").code), 1008);
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => panic!("closed without a close frame after {codes:?}"),
        }
    }
    assert!(codes.iter().any(|c| c == "chat_rate_limited"), "{codes:?}");
    // Ben still hears the party (his socket was never at fault).
    let joined = ctx.call(Method::POST, &format!("/v1/party/{id}/join"), Some(&m[2].token), None).await;
    assert_eq!(joined.status, StatusCode::OK);
    loop {
        let event = next(&mut ben).await;
        if event["type"] == "member_joined" {
            assert_eq!(event["player_id"].as_u64(), Some(m[2].id));
            break;
        }
    }

    // Only members, with a valid token, may open the socket.
    let outsider = server.ws_refused(&url(&m[2].token).replace(&m[2].token, "garbage")).await;
    assert_eq!(outsider, 401);
    let other = party(&ctx, "duel", &ctx.players(&["dan"]).await[0], &[]).await;
    assert_eq!(server.ws_refused(&format!("/v1/ws/party/{other}?access_token={}", m[1].token)).await, 403);
    assert_eq!(server.ws_refused(&format!("/v1/ws/party/9999?access_token={}", m[1].token)).await, 404);
    server.stop().await;
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON event, skipping nothing; bounds a hang, times nothing.
async fn next(ws: &mut Ws) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an event before the deadline")
            .expect("the socket is open")
            .expect("a frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// The router on a real socket.
struct Served {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Served {
    async fn start(ctx: &Ctx) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(rally_admin::serve(listener, ctx.router.clone(), async move {
            let _ = stopped.await;
        }));
        Served { addr, stop, task }
    }

    async fn ws(&self, path: &str) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}{path}", self.addr)).await.expect("upgrades");
        ws
    }

    /// The HTTP status a refused upgrade gets.
    async fn ws_refused(&self, path: &str) -> u16 {
        match tokio_tungstenite::connect_async(format!("ws://{}{path}", self.addr)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        // Open WebSockets keep graceful shutdown waiting; the test is over either way.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.task).await;
    }
}

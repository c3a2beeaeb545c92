//! The service commands end to end, as separate processes on loopback: `rally dev`,
//! `rally token`, `rally loadgen` against it, Ctrl-C shutdown; and `rally demo`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

fn rally() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rally"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rally-serve-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("rally runs");
    assert!(out.status.success(), "{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr));
    out
}

/// `rally dev` on ephemeral ports; its edge address, certificate fingerprint and admin
/// address.
fn start_dev(data_dir: &std::path::Path) -> (Child, String, String, String) {
    let (child, addr, fingerprint, admin, _) = start_dev_with(data_dir, &[]);
    (child, addr, fingerprint, admin)
}

/// `start_dev` with more flags; also the lines it prints from then on.
fn start_dev_with(
    data_dir: &std::path::Path,
    flags: &[&str],
) -> (Child, String, String, String, Arc<Mutex<Vec<String>>>) {
    let mut child = rally()
        .args(["dev", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first.split_whitespace().find(|w| w.contains(':') && w.contains('.')).unwrap().to_owned();
    let second = lines.next().unwrap().unwrap();
    let fingerprint = second.rsplit(' ').next().unwrap().to_owned();
    assert_eq!(fingerprint.len(), 64, "{second}");
    let third = lines.next().unwrap().unwrap();
    let admin = third.split("http://").nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap().to_owned();
    // Keep draining stdout so the child never blocks on a full pipe.
    let printed = Arc::new(Mutex::new(Vec::new()));
    let sink = printed.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    (child, addr, fingerprint, admin, printed)
}

/// One HTTP/1.1 request; the status code and the body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    http_as(addr, method, path, None, body)
}

/// `http` with `Authorization: Bearer <token>`.
fn http_as(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn interrupt(child: &mut Child) {
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "rally dev exits cleanly on Ctrl-C: {exit:?}");
}

#[test]
fn dev_serves_loadgen_and_stops_on_ctrl_c() {
    let dir = scratch("dev");
    let (mut dev, addr, fingerprint, admin) = start_dev(&dir);
    let key = dir.join("dev-signing-key.pem");
    assert!(key.exists(), "rally dev made the dev key");
    assert!(dir.join("rally.db").exists(), "rally dev made and migrated the SQLite database");

    // An account made through the admin API logs in to the edge with its access token.
    assert_eq!(http(&admin, "GET", "/readyz", ""), (200, "ready".to_owned()));
    let (status, body) = http(
        &admin,
        "POST",
        "/v1/auth/register",
        r#"{"username":"alice","email":"a@example.com","password":"correct horse"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let tokens: serde_json::Value = serde_json::from_str(&body).unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let welcome = rt.block_on(async {
        let trust = rally_client::Trust::fingerprint_hex(&fingerprint).unwrap();
        let config = rally_client::ClientConfig::new(addr.parse().unwrap(), trust, access);
        let (client, welcome) = rally_client::Client::connect(config).await.expect("the edge accepts admin tokens");
        client.close().await;
        welcome
    });
    assert_eq!(welcome.player_id, tokens["account_id"].as_u64().unwrap());

    // `rally token` signs with the same key; the token is a three-part JWT.
    let token = run(rally().args(["token", "--player", "7", "--mmr", "1500", "--key"]).arg(&key));
    let token = String::from_utf8(token.stdout).unwrap();
    assert_eq!(token.trim().split('.').count(), 3, "{token}");

    let report = dir.join("report.json");
    let out = run(rally()
        .args(["loadgen", "--target", &addr, "--fingerprint", &fingerprint, "--key"])
        .arg(&key)
        .args(["--players", "40", "--duration-s", "3", "--modes", "duel-1v1", "--play-max-ms", "300"])
        .arg("--report")
        .arg(&report));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("enqueue→ack"), "{table}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert!(report["enqueues"].as_u64().unwrap() > 0, "{report}");
    assert!(report["matches_received"].as_u64().unwrap() > 0, "{report}");
    // Every acked enqueue falls in one second of the timeline.
    let per_second: u64 =
        report["ack_timeline"].as_array().unwrap().iter().map(|s| s["enqueues"].as_u64().unwrap()).sum();
    assert_eq!(per_second, report["enqueues"].as_u64().unwrap(), "{report}");
    assert!(table.contains("slowest seconds"), "{table}");
    // The players close together a second after the 3 s of load, not as each stops.
    assert!(report["elapsed_s"].as_f64().unwrap() >= 4.0, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "no errors: {report}");

    // The admin's /metrics shows the edge and the engine too.
    let (status, metrics) = http(&admin, "GET", "/metrics", "");
    assert_eq!(status, 200);
    for name in [
        "rally_edge_connections",
        "rally_edge_handshakes_total",
        "rally_edge_frames_sent_total",
        "rally_engine_tick_seconds",
        "rally_engine_waiting_tickets",
        "rally_engine_searches_total",
        "rally_engine_matches_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    assert!(metrics.contains(r#"kind="match_found""#), "MatchFound pushes are counted");

    // A wrong fingerprint is refused up front.
    let bad = rally().args(["loadgen", "--target", &addr, "--fingerprint", "abc"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("64 hex digits"));

    interrupt(&mut dev);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dev_runs_the_game_loop_from_queue_to_leaderboard_with_redis_boards() {
    let dir = scratch("loop");
    // Production-mode leaderboards: Redis sorted sets, under a prefix of this test's own.
    let redis_url = std::env::var("RALLY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut redis = redis::Client::open(redis_url.as_str()).and_then(|c| c.get_connection()).unwrap_or_else(|e| {
        panic!(
            "Redis is not reachable at {redis_url}: {e}. Start it with `redis-server --daemonize yes --bind 127.0.0.1 \
             --port 6379 --save \"\" --appendonly no`, or point RALLY_TEST_REDIS_URL at another server"
        )
    });
    let prefix = format!("rally_test_serve_{}:", std::process::id());
    let flags = ["--server-key", "k3y", "--redis-url", &redis_url, "--redis-prefix", &prefix];
    let (mut dev, addr, fingerprint, admin, printed) = start_dev_with(&dir, &flags);
    let mut players = Vec::new();
    for name in ["alice", "bob"] {
        let body = format!(r#"{{"username":"{name}","email":"{name}@example.com","password":"correct horse"}}"#);
        let (status, body) = http(&admin, "POST", "/v1/auth/register", &body);
        assert_eq!(status, 201, "{body}");
        let tokens: Value = serde_json::from_str(&body).unwrap();
        players.push((tokens["account_id"].as_u64().unwrap(), tokens["access_token"].as_str().unwrap().to_owned()));
    }
    let server = r#"{"datacenter":"eu-west","address":"192.0.2.10:7777","capacity":8}"#;
    let (status, body) = http_as(&admin, "POST", "/v1/servers", Some("k3y"), server);
    assert_eq!(status, 201, "{body}");
    let server_token = serde_json::from_str::<Value>(&body).unwrap()["token"].as_str().unwrap().to_owned();

    // Both queue over QUIC and are told the server and their connect tokens.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let found = rt.block_on(async {
        let trust = rally_client::Trust::fingerprint_hex(&fingerprint).unwrap();
        let mut clients = Vec::new();
        for (_, access) in &players {
            let config = rally_client::ClientConfig::new(addr.parse().unwrap(), trust.clone(), access.clone());
            let (client, _) = rally_client::Client::connect(config).await.unwrap();
            client.enqueue("duel-1v1", &[("eu-west".into(), 20.0)]).await.unwrap();
            clients.push(client);
        }
        let mut found = Vec::new();
        for client in &clients {
            let event = tokio::time::timeout(Duration::from_secs(10), client.next_event()).await.unwrap();
            match event {
                Some(rally_client::ClientEvent::MatchFound(m)) => found.push(m),
                other => panic!("expected a match, got {other:?}"),
            }
        }
        for client in clients {
            client.close().await;
        }
        found
    });
    assert_eq!(found[0].match_id, found[1].match_id);
    assert!(found.iter().all(|m| m.server_addr == "192.0.2.10:7777" && m.connect_token.len() == 64), "{found:?}");
    let match_id = found[0].match_id;

    // The server sees the session, plays it and reports; ratings, history and the
    // leaderboard follow.
    let (status, body) = http_as(&admin, "POST", "/v1/servers/heartbeat", Some(&server_token), "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("\"match_id\":{match_id}")), "{body}");
    let winner_team = found[0].teams.iter().position(|t| t.players.contains(&players[0].0)).unwrap();
    let placements = if winner_team == 0 { "[1,2]" } else { "[2,1]" };
    let path = format!("/v1/session/{match_id}/result");
    let (status, body) =
        http_as(&admin, "POST", &path, Some(&server_token), &format!(r#"{{"placements":{placements}}}"#));
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let board = loop {
        let (_, body) = http_as(&admin, "GET", "/v1/leaderboard?mode=duel-1v1", Some(&players[1].1), "");
        let board: Value = serde_json::from_str(&body).unwrap();
        if board["standings"].as_array().is_some_and(|s| s.len() == 2) {
            break board;
        }
        assert!(Instant::now() < deadline, "the result never reached the leaderboard: {body}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(board["standings"][0]["player_id"].as_u64(), Some(players[0].0), "the winner leads: {board}");
    let (_, body) = http_as(&admin, "GET", "/v1/matches/history", Some(&players[1].1), "");
    let history: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(history["matches"][0]["match_id"].as_u64(), Some(match_id), "{body}");
    assert_eq!(history["matches"][0]["place"], 2, "{body}");
    // The board came from Redis: the set holds both players (and the completeness marker).
    let season = board["season"]["name"].as_str().unwrap().trim_start_matches('s').to_owned();
    let key = format!("{prefix}lb:{season}:duel-1v1");
    let members: Vec<String> = redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).query(&mut redis).unwrap();
    assert_eq!(members.len(), 3, "{key}: {members:?}");
    assert!(members.contains(&players[0].0.to_string()) && members.contains(&players[1].0.to_string()));
    let _: () = redis::cmd("DEL").arg(&key).query(&mut redis).unwrap();

    interrupt(&mut dev);
    let printed = printed.lock().unwrap().join("\n");
    assert!(
        printed.contains("results stored: 1 matches, 2 player rows (0 refused by the database, 0 lost)"),
        "{printed}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dev_serves_parties_over_quic() {
    let dir = scratch("quic-parties");
    let (mut dev, addr, fingerprint, admin, _) = start_dev_with(&dir, &[]);
    let mut players = Vec::new();
    for n in 0..7 {
        let body = format!(r#"{{"username":"squad{n}","email":"squad{n}@example.com","password":"correct horse"}}"#);
        let (status, body) = http(&admin, "POST", "/v1/auth/register", &body);
        assert_eq!(status, 201, "{body}");
        let tokens: Value = serde_json::from_str(&body).unwrap();
        players.push((tokens["account_id"].as_u64().unwrap(), tokens["access_token"].as_str().unwrap().to_owned()));
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use rally_client::{ClientEvent, ErrorCode, PartyOp, PartyReady};
        let trust = rally_client::Trust::fingerprint_hex(&fingerprint).unwrap();
        let mut clients = Vec::new();
        for (_, access) in &players {
            let config = rally_client::ClientConfig::new(addr.parse().unwrap(), trust.clone(), access.clone());
            clients.push(rally_client::Client::connect(config).await.unwrap().0);
        }
        let eu_west = rally_client::DatacenterRtt { datacenter: "eu-west".into(), rtt_ms: 20.0 };
        let ready = || PartyOp::Ready(PartyReady { ready: true, rtt_ms: vec![eu_west.clone()] });
        // Two squads of three, over QUIC only.
        let mut party_ids = Vec::new();
        for squad in clients.chunks(3).take(2) {
            let party = squad[0].party(PartyOp::Create("trio-3v3".into())).await.unwrap().unwrap();
            for member in &squad[1..] {
                let joined = member.party(PartyOp::Join(party.party_id)).await.unwrap().unwrap();
                assert_eq!(joined.leader_id, party.leader_id);
            }
            let refused = squad[1].party(PartyOp::Queue).await.unwrap_err();
            assert_eq!(refused.code(), Some(ErrorCode::PartyRefused));
            assert!(refused.to_string().contains("not_the_leader"), "{refused}");
            for member in squad {
                member.party(ready()).await.unwrap();
            }
            party_ids.push(party.party_id);
        }
        let full = clients[6].party(PartyOp::Join(party_ids[0])).await.unwrap_err();
        assert!(full.to_string().contains("party_full"), "{full}");
        // The second party may be matched before its answer comes back, so only that
        // the engine took each ticket is checked.
        for leader in [&clients[0], &clients[3]] {
            leader.party(PartyOp::Queue).await.unwrap().unwrap();
        }
        // Every member hears of the match on their connection.
        let mut matches = Vec::new();
        for client in &clients[..6] {
            let found = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match client.next_event().await {
                        Some(ClientEvent::Party(e)) if e.kind == "match_found" => return e,
                        Some(ClientEvent::Closed(e)) => panic!("connection lost: {e}"),
                        None => panic!("connection gone"),
                        Some(_) => {}
                    }
                }
            })
            .await
            .expect("a party match_found event");
            matches.push(found.match_id);
        }
        assert!(matches.iter().all(|m| *m == matches[0] && *m != 0), "{matches:?}");
        clients[0].party(PartyOp::Chat("gg".into())).await.unwrap();
        // The first squad queues again with nobody to play; a member's connection goes:
        // the party leaves the queue and the leader hears why.
        for member in &clients[..3] {
            member.party(ready()).await.unwrap();
        }
        assert!(clients[0].party(PartyOp::Queue).await.unwrap().unwrap().queued);
        let mut clients = clients.into_iter();
        let leader = clients.next().unwrap();
        clients.next().unwrap().close().await;
        let dropped = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(ClientEvent::Party(e)) = leader.next_event().await
                    && e.kind == "dequeued"
                {
                    return e;
                }
            }
        })
        .await
        .expect("the leader hears the party left the queue");
        assert_eq!(dropped.text, "member_dropped");
        assert!(!leader.party(PartyOp::Get).await.unwrap().unwrap().queued);
        leader.close().await;
        for client in clients {
            client.close().await;
        }
    });
    interrupt(&mut dev);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn demo_runs_bots_through_the_whole_path() {
    let out = run(rally().args(["demo", "--duration-s", "3", "--bots", "40"]));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("players matched/s"), "{text}");
    let received: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("matches received"))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("no summary in {text}"));
    assert!(received > 0, "{text}");
    assert!(text.contains("errors            none"), "{text}");
    // The whole loop: game servers reported results, ratings moved onto leaderboards,
    // and everything was stored.
    let reported: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("game servers reported "))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no results line in {text}"));
    assert!(reported > 0, "{text}");
    assert!(text.contains("leaderboard duel-1v1 (season s1)"), "{text}");
    assert!(text.contains(&format!("results stored: {reported} matches")), "{text}");
}

#[test]
fn migrate_creates_and_upgrades_a_sqlite_database() {
    let dir = scratch("migrate");
    let url = format!("sqlite://{}/nested/rally.db", dir.display());
    for _ in 0..2 {
        let out = run(rally().args(["migrate", "--database", &url]));
        assert!(String::from_utf8_lossy(&out.stdout).contains("migrations applied"));
    }
    assert!(dir.join("nested/rally.db").exists());
    let bad = rally().args(["migrate", "--database", "mysql://nope"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected sqlite://PATH or postgres://"));
    std::fs::remove_dir_all(&dir).unwrap();
}

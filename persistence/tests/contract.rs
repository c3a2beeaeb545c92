//! The store contract, run against both backends: every test exists once per backend,
//! each on a fresh database (a new SQLite file; a new Postgres database, dropped after).
//!
//! Postgres is the real server on 127.0.0.1:5432 (`RALLY_TEST_POSTGRES_URL` overrides it).
//! If it is not reachable the Postgres tests fail and say how to start it.

#[macro_use]
mod common;

use std::sync::Arc;

use common::new_account;
use rally_persistence::*;

per_backend!(
    accounts_are_created_with_a_profile_and_unique,
    refresh_tokens_rotate_and_reuse_revokes_the_family,
    racing_rotations_let_exactly_one_win,
    profiles_are_patched_field_by_field,
    seasons_are_found_by_time_and_name,
    ratings_are_upserted,
    migrations_are_idempotent,
    matches_are_recorded_once_with_history_and_ratings,
    a_match_naming_an_unknown_player_is_refused_whole,
    leaderboards_rank_by_display_rating,
    recent_seasons_come_latest_first,
);

async fn accounts_are_created_with_a_profile_and_unique(store: Arc<SqlStore>) {
    let store: &dyn Store = &*store;
    store.ping().await.unwrap();
    let alice = store.create_account(new_account("alice")).await.unwrap();
    assert_eq!(alice.username, "alice");
    assert_eq!(alice.created_at_ms, 1_000);
    assert_eq!(store.account(alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(store.account_by_login("alice").await.unwrap(), Some(alice.clone()));
    assert_eq!(store.account_by_login("alice@example.com").await.unwrap(), Some(alice.clone()));
    assert_eq!(store.account_by_login("bob").await.unwrap(), None);
    assert_eq!(store.account(alice.id + 1000).await.unwrap(), None);
    let profile = store.profile(alice.id).await.unwrap().unwrap();
    assert_eq!((profile.display_name.as_str(), profile.preferences.as_str()), ("ALICE", "{}"));
    assert_eq!(profile.preferred_region, None);

    let mut same_name = new_account("alice");
    same_name.email = "other@example.com".into();
    assert!(matches!(store.create_account(same_name).await, Err(StoreError::Conflict { field: "username" })));
    let mut same_email = new_account("alice2");
    same_email.email = "alice@example.com".into();
    assert!(matches!(store.create_account(same_email).await, Err(StoreError::Conflict { field: "email" })));
    // A refused account left nothing behind: the next one gets through.
    let bob = store.create_account(new_account("bob")).await.unwrap();
    assert_ne!(bob.id, alice.id);
    assert!(store.profile(bob.id).await.unwrap().is_some());
}

fn token(hash: &str, family: &str, account_id: u64, expires_at_ms: u64) -> NewRefreshToken {
    NewRefreshToken { token_hash: hash.into(), family: family.into(), account_id, issued_at_ms: 1_000, expires_at_ms }
}

async fn refresh_tokens_rotate_and_reuse_revokes_the_family(store: Arc<SqlStore>) {
    let store: &dyn Store = &*store;
    let alice = store.create_account(new_account("alice")).await.unwrap();
    store.insert_refresh_token(token("t1", "fam", alice.id, 10_000)).await.unwrap();
    let rotated = store.rotate_refresh_token("t1", token("t2", "ignored", 0, 20_000), 2_000).await.unwrap();
    assert_eq!(rotated, Rotation::Rotated { account_id: alice.id });
    let rotated = store.rotate_refresh_token("t2", token("t3", "ignored", 0, 30_000), 3_000).await.unwrap();
    assert_eq!(rotated, Rotation::Rotated { account_id: alice.id }, "the new token joined the family");
    // Replaying a spent token revokes the whole family, including the live t3.
    let reused = store.rotate_refresh_token("t1", token("t4", "x", 0, 40_000), 4_000).await.unwrap();
    assert_eq!(reused, Rotation::Reused { account_id: alice.id, family: "fam".into() });
    assert_eq!(store.rotate_refresh_token("t3", token("t5", "x", 0, 50_000), 5_000).await.unwrap(), Rotation::Revoked);
    // No token was stored by the refused rotations.
    assert_eq!(store.rotate_refresh_token("t4", token("t6", "x", 0, 50_000), 5_000).await.unwrap(), Rotation::Unknown);
    assert_eq!(store.rotate_refresh_token("t5", token("t6", "x", 0, 50_000), 5_000).await.unwrap(), Rotation::Unknown);

    store.insert_refresh_token(token("old", "fam2", alice.id, 10_000)).await.unwrap();
    assert_eq!(store.rotate_refresh_token("old", token("n", "x", 0, 99_000), 10_000).await.unwrap(), Rotation::Expired);
    store.insert_refresh_token(token("live", "fam3", alice.id, 99_000)).await.unwrap();
    store.revoke_family("fam3", 11_000).await.unwrap();
    assert_eq!(
        store.rotate_refresh_token("live", token("n", "x", 0, 99_000), 12_000).await.unwrap(),
        Rotation::Revoked
    );
    // A token for a missing account is refused by the schema.
    let orphan = store.insert_refresh_token(token("orphan", "f", alice.id + 1000, 99_000)).await;
    assert!(matches!(orphan, Err(StoreError::NotFound { .. })), "{orphan:?}");
}

async fn racing_rotations_let_exactly_one_win(store: Arc<SqlStore>) {
    let alice = store.create_account(new_account("alice")).await.unwrap();
    store.insert_refresh_token(token("t1", "fam", alice.id, 99_000)).await.unwrap();
    let (a, b) = (store.clone(), store.clone());
    let (ra, rb) = tokio::join!(
        tokio::spawn(async move { a.rotate_refresh_token("t1", token("a", "x", 0, 99_000), 2_000).await.unwrap() }),
        tokio::spawn(async move { b.rotate_refresh_token("t1", token("b", "x", 0, 99_000), 2_000).await.unwrap() }),
    );
    let mut outcomes = [ra.unwrap(), rb.unwrap()];
    outcomes.sort_by_key(|o| matches!(o, Rotation::Reused { .. }));
    assert_eq!(outcomes[0], Rotation::Rotated { account_id: alice.id });
    assert_eq!(outcomes[1], Rotation::Reused { account_id: alice.id, family: "fam".into() });
}

async fn profiles_are_patched_field_by_field(store: Arc<SqlStore>) {
    let store: &dyn Store = &*store;
    let alice = store.create_account(new_account("alice")).await.unwrap();
    let p = store
        .update_profile(alice.id, ProfilePatch { display_name: Some("Al".into()), ..Default::default() }, 2_000)
        .await
        .unwrap();
    assert_eq!((p.display_name.as_str(), p.preferred_region.as_deref(), p.updated_at_ms), ("Al", None, 2_000));
    let p = store
        .update_profile(
            alice.id,
            ProfilePatch {
                preferred_region: Some(Some("eu".into())),
                preferences: Some(r#"{"voice":true}"#.into()),
                ..Default::default()
            },
            3_000,
        )
        .await
        .unwrap();
    assert_eq!(p.display_name, "Al", "untouched");
    assert_eq!(p.preferred_region.as_deref(), Some("eu"));
    assert_eq!(p.preferences, r#"{"voice":true}"#);
    let p = store
        .update_profile(alice.id, ProfilePatch { preferred_region: Some(None), ..Default::default() }, 4_000)
        .await
        .unwrap();
    assert_eq!(p.preferred_region, None, "cleared");
    assert_eq!(store.profile(alice.id).await.unwrap(), Some(p));
    let missing = store.update_profile(alice.id + 1000, ProfilePatch::default(), 5_000).await;
    assert!(matches!(missing, Err(StoreError::NotFound { what: "profile" })));
}

async fn seasons_are_found_by_time_and_name(store: Arc<SqlStore>) {
    let store: &dyn Store = &*store;
    assert_eq!(store.season_at(500).await.unwrap(), None);
    let s1 = store.create_season("2026-s1", 1_000, 2_000).await.unwrap();
    let s2 = store.create_season("2026-s2", 2_000, 3_000).await.unwrap();
    assert_eq!(store.season_at(999).await.unwrap(), None);
    assert_eq!(store.season_at(1_000).await.unwrap(), Some(s1.clone()));
    assert_eq!(store.season_at(1_999).await.unwrap(), Some(s1.clone()));
    assert_eq!(store.season_at(2_000).await.unwrap(), Some(s2.clone()), "ends are exclusive");
    assert_eq!(store.season_at(3_000).await.unwrap(), None);
    assert_eq!(store.season("2026-s2").await.unwrap(), Some(s2));
    assert!(matches!(
        store.create_season("2026-s1", 5_000, 6_000).await,
        Err(StoreError::Conflict { field: "season name" })
    ));
    assert!(matches!(store.create_season("bad", 5_000, 5_000).await, Err(StoreError::Invalid(_))));
}

async fn ratings_are_upserted(store: Arc<SqlStore>) {
    let store: &dyn Store = &*store;
    let alice = store.create_account(new_account("alice")).await.unwrap();
    let bob = store.create_account(new_account("bob")).await.unwrap();
    let season = store.create_season("s", 0, 1_000_000).await.unwrap();
    let rating = |account_id, mu, games| Rating {
        account_id,
        mode: "duel-1v1".into(),
        season_id: season.id,
        mu,
        sigma: 8.333,
        games,
        updated_at_ms: 7,
    };
    assert_eq!(store.rating(alice.id, "duel-1v1", season.id).await.unwrap(), None);
    store.put_ratings(&[rating(alice.id, 25.0, 0), rating(bob.id, 25.0, 0)]).await.unwrap();
    store.put_ratings(&[rating(alice.id, 27.5, 1)]).await.unwrap();
    assert_eq!(store.rating(alice.id, "duel-1v1", season.id).await.unwrap(), Some(rating(alice.id, 27.5, 1)));
    assert_eq!(store.rating(bob.id, "duel-1v1", season.id).await.unwrap(), Some(rating(bob.id, 25.0, 0)));
    assert_eq!(store.rating(bob.id, "ffa-8", season.id).await.unwrap(), None);
    // One bad row fails the whole batch: nothing of it is written.
    let batch = [rating(bob.id, 30.0, 2), rating(bob.id + 1000, 1.0, 1)];
    assert!(matches!(store.put_ratings(&batch).await, Err(StoreError::NotFound { .. })));
    assert_eq!(store.rating(bob.id, "duel-1v1", season.id).await.unwrap(), Some(rating(bob.id, 25.0, 0)));
}

async fn migrations_are_idempotent(store: Arc<SqlStore>) {
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    store.create_account(new_account("alice")).await.unwrap();
}

fn record(match_id: u64, season_id: u64, finished_at_ms: u64, players: &[(AccountId, u16, u16, u64)]) -> MatchRecord {
    MatchRecord {
        match_id,
        mode: "duel-1v1".into(),
        season_id,
        datacenter: "eu-west".into(),
        formed_at_ms: finished_at_ms - 100,
        finished_at_ms,
        players: players
            .iter()
            .map(|&(account_id, team, place, games)| PlayerResult {
                account_id,
                team,
                place,
                mu_before: 1500.0,
                sigma_before: 500.0,
                mu_after: if place == 1 { 1500.0 + 10.0 * games as f64 } else { 1500.0 - 10.0 * games as f64 },
                sigma_after: 500.0 - games as f64,
                games,
            })
            .collect(),
    }
}

async fn matches_are_recorded_once_with_history_and_ratings(store: Arc<SqlStore>) {
    let store: &dyn Store = &*store;
    let a = store.create_account(new_account("alice")).await.unwrap().id;
    let b = store.create_account(new_account("bob")).await.unwrap().id;
    let season = store.create_season("s", 0, 1_000_000).await.unwrap().id;
    let first = record(1, season, 1_000, &[(a, 0, 1, 1), (b, 1, 2, 1)]);
    let second = record(2, season, 2_000, &[(a, 0, 2, 2), (b, 1, 1, 2)]);
    assert_eq!(store.record_matches(&[first.clone(), second.clone()]).await.unwrap(), 4);
    // Replaying the batch, or an older match alone, writes nothing and moves no rating.
    assert_eq!(store.record_matches(&[first.clone(), second.clone()]).await.unwrap(), 0);
    assert_eq!(store.record_matches(std::slice::from_ref(&first)).await.unwrap(), 0);
    let alice = store.rating(a, "duel-1v1", season).await.unwrap().unwrap();
    assert_eq!((alice.mu, alice.sigma, alice.games, alice.updated_at_ms), (1480.0, 498.0, 2, 2_000));
    // A later match arriving before an earlier one (another worker, a retry) still leaves
    // the rating of the later one.
    let fourth = record(4, season, 4_000, &[(a, 0, 1, 4), (b, 1, 2, 4)]);
    let third = record(3, season, 3_000, &[(a, 0, 1, 3), (b, 1, 2, 3)]);
    assert_eq!(store.record_matches(&[fourth]).await.unwrap(), 2);
    assert_eq!(store.record_matches(&[third]).await.unwrap(), 2);
    assert_eq!(store.rating(a, "duel-1v1", season).await.unwrap().unwrap().games, 4);

    let page =
        |before, mode: Option<&str>| HistoryQuery { account_id: a, mode: mode.map(str::to_owned), before, limit: 3 };
    let newest = store.match_history(&page(None, None)).await.unwrap();
    assert_eq!(newest.iter().map(|h| h.match_id).collect::<Vec<_>>(), [4, 3, 2]);
    assert_eq!((newest[2].place, newest[2].team, newest[2].mu_after), (2, 0, 1480.0));
    let last = &newest[2];
    let older = store.match_history(&page(Some((last.finished_at_ms, last.match_id)), None)).await.unwrap();
    assert_eq!(older.iter().map(|h| h.match_id).collect::<Vec<_>>(), [1]);
    assert!(store.match_history(&page(None, Some("ffa-8"))).await.unwrap().is_empty());
    assert_eq!(store.match_history(&page(None, Some("duel-1v1"))).await.unwrap().len(), 3);
}

async fn a_match_naming_an_unknown_player_is_refused_whole(store: Arc<SqlStore>) {
    let store: &dyn Store = &*store;
    let a = store.create_account(new_account("alice")).await.unwrap().id;
    let season = store.create_season("s", 0, 1_000_000).await.unwrap().id;
    let good = record(1, season, 1_000, &[(a, 0, 1, 1)]);
    let bad = record(2, season, 1_000, &[(a + 1_000, 1, 2, 1)]);
    let err = store.record_matches(&[good.clone(), bad]).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert_eq!(store.rating(a, "duel-1v1", season).await.unwrap(), None, "nothing of the batch is kept");
    assert_eq!(store.record_matches(&[good]).await.unwrap(), 1);
}

async fn leaderboards_rank_by_display_rating(store: Arc<SqlStore>) {
    let store: &dyn Store = &*store;
    let season = store.create_season("s", 0, 1_000_000).await.unwrap().id;
    let mut ids = Vec::new();
    for (name, mu, sigma) in
        [("ann", 1600.0, 100.0), ("ben", 1500.0, 50.0), ("cat", 2000.0, 300.0), ("dan", 1450.0, 50.0)]
    {
        let id = store.create_account(new_account(name)).await.unwrap().id;
        ids.push(id);
        let rating = Rating {
            account_id: id,
            mode: "duel-1v1".into(),
            season_id: season,
            mu,
            sigma,
            games: 1,
            updated_at_ms: 1,
        };
        store.put_ratings(&[rating]).await.unwrap();
    }
    // Display ratings: ann 1300, ben 1350, cat 1100, dan 1300 (ties by account id).
    let board = store.leaderboard(season, "duel-1v1", 0, 10).await.unwrap();
    let names: Vec<&str> = board.iter().map(|r| r.display_name.as_str()).collect();
    assert_eq!(names, ["BEN", "ANN", "DAN", "CAT"]);
    assert_eq!(board[0].rating, 1350.0);
    let page = store.leaderboard(season, "duel-1v1", 1, 2).await.unwrap();
    assert_eq!(page.iter().map(|r| r.account_id).collect::<Vec<_>>(), [ids[0], ids[3]]);
    assert_eq!(store.leaderboard_rank(season, "duel-1v1", ids[1]).await.unwrap(), Some(0));
    assert_eq!(store.leaderboard_rank(season, "duel-1v1", ids[3]).await.unwrap(), Some(2));
    assert_eq!(store.leaderboard_rank(season, "duel-1v1", ids[2]).await.unwrap(), Some(3));
    assert_eq!(store.leaderboard_rank(season, "ffa-8", ids[2]).await.unwrap(), None);
    assert!(store.leaderboard(season + 1, "duel-1v1", 0, 10).await.unwrap().is_empty());
    let mut names = store.display_names(&[ids[2], ids[0], 999_999]).await.unwrap();
    names.sort();
    assert_eq!(names, [(ids[0], "ANN".to_owned()), (ids[2], "CAT".to_owned())]);
    assert!(store.display_names(&[]).await.unwrap().is_empty());
}

async fn recent_seasons_come_latest_first(store: Arc<SqlStore>) {
    let store: &dyn Store = &*store;
    let s1 = store.create_season("s1", 0, 1_000).await.unwrap();
    let s2 = store.create_season("s2", 1_000, 2_000).await.unwrap();
    store.create_season("s3", 5_000, 6_000).await.unwrap();
    assert_eq!(store.recent_seasons(1_500, 10).await.unwrap(), [s2.clone(), s1]);
    assert_eq!(store.recent_seasons(1_500, 1).await.unwrap(), [s2]);
}

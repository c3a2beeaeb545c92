//! The store contract, run against both backends: every test exists once per backend,
//! each on a fresh database (a new SQLite file; a new Postgres database, dropped after).
//!
//! Postgres is the real server on 127.0.0.1:5432 (`RALLY_TEST_POSTGRES_URL` overrides it).
//! If it is not reachable the Postgres tests fail and say how to start it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use rally_persistence::*;

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A fresh, migrated store and what to clean up after it.
struct Fresh {
    store: Arc<SqlStore>,
    cleanup: Cleanup,
}

enum Cleanup {
    File(std::path::PathBuf),
    Database { admin_url: String, name: String },
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

async fn fresh(backend: Backend) -> Fresh {
    match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(unique("rally_store"));
            let url = format!("sqlite://{}/rally.db", dir.display());
            let store = SqlStore::connect(&StoreConfig::new(url)).await.expect("sqlite opens");
            store.migrate().await.expect("sqlite migrations apply");
            Fresh { store: Arc::new(store), cleanup: Cleanup::File(dir) }
        }
        Backend::Postgres => {
            let admin_url = std::env::var("RALLY_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG.to_owned());
            let admin = SqlStore::connect(&StoreConfig::new(&admin_url)).await.unwrap_or_else(|e| {
                panic!(
                    "Postgres is not reachable at {admin_url}: {e}. Start it with \
                     `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, \
                     or point RALLY_TEST_POSTGRES_URL at another server"
                )
            });
            let name = unique("rally_test");
            admin.execute_admin(&format!("CREATE DATABASE {name}")).await.expect("create test database");
            admin.close().await;
            let url = format!("{}/{name}", admin_url.rsplit_once('/').expect("url has a database").0);
            let store = SqlStore::connect(&StoreConfig::new(url)).await.expect("test database opens");
            store.migrate().await.expect("postgres migrations apply");
            Fresh { store: Arc::new(store), cleanup: Cleanup::Database { admin_url, name } }
        }
    }
}

impl Fresh {
    async fn done(self) {
        self.store.close().await;
        match self.cleanup {
            Cleanup::File(dir) => std::fs::remove_dir_all(dir).unwrap(),
            Cleanup::Database { admin_url, name } => {
                let admin = SqlStore::connect(&StoreConfig::new(admin_url)).await.unwrap();
                // FORCE: the server may not have noticed the pool's connections close yet.
                admin.execute_admin(&format!("DROP DATABASE {name} WITH (FORCE)")).await.unwrap();
                admin.close().await;
            }
        }
    }
}

/// Each contract function becomes one test per backend.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let fresh = super::fresh(rally_persistence::Backend::Sqlite).await;
                    super::$name(fresh.store.clone()).await;
                    fresh.done().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let fresh = super::fresh(rally_persistence::Backend::Postgres).await;
                    super::$name(fresh.store.clone()).await;
                    fresh.done().await;
                }
            )*
        }
    };
}

contract!(
    accounts_are_created_with_a_profile_and_unique,
    refresh_tokens_rotate_and_reuse_revokes_the_family,
    racing_rotations_let_exactly_one_win,
    profiles_are_patched_field_by_field,
    seasons_are_found_by_time_and_name,
    ratings_are_upserted,
    migrations_are_idempotent,
);

fn new_account(name: &str) -> NewAccount {
    NewAccount {
        username: name.into(),
        email: format!("{name}@example.com"),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        display_name: name.to_uppercase(),
        now_ms: 1_000,
    }
}

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

//! `StoreRatings` against a real (SQLite) store.

use std::sync::Arc;

use rally_edge::{RatingSource, StoreRatings};
use rally_persistence::{NewAccount, Rating, SqlStore, Store, StoreConfig};

#[tokio::test]
async fn ratings_come_from_the_current_season_then_the_fallbacks() {
    let dir = std::env::temp_dir().join(format!("rally-edge-ratings-{}", std::process::id()));
    let store = SqlStore::connect(&StoreConfig::new(format!("sqlite://{}/r.db", dir.display()))).await.unwrap();
    store.migrate().await.unwrap();
    let account = store
        .create_account(NewAccount {
            username: "alice".into(),
            email: "alice@example.com".into(),
            password_hash: "x".into(),
            display_name: "Alice".into(),
            now_ms: 0,
        })
        .await
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let production = StoreRatings { store: store.clone(), default: 1500.0, trust_token_mmr: false };
    let dev = StoreRatings { store: store.clone(), default: 1500.0, trust_token_mmr: true };

    // No season yet: the default, or in dev the token's rating.
    assert_eq!(
        production.rating(account.id, "duel", Some(2400.0)).await.unwrap(),
        1500.0,
        "tokens never set ratings in production"
    );
    assert_eq!(dev.rating(account.id, "duel", Some(2400.0)).await.unwrap(), 2400.0);

    let season = store.create_season("now", 0, u64::MAX / 2).await.unwrap();
    let rating = Rating {
        account_id: account.id,
        mode: "duel".into(),
        season_id: season.id,
        mu: 1810.0,
        sigma: 90.0,
        games: 12,
        updated_at_ms: 1,
    };
    store.put_ratings(&[rating]).await.unwrap();
    assert_eq!(production.rating(account.id, "duel", Some(2400.0)).await.unwrap(), 1810.0);
    assert_eq!(dev.rating(account.id, "duel", Some(2400.0)).await.unwrap(), 1810.0, "a stored rating wins in dev too");
    assert_eq!(production.rating(account.id, "ffa", None).await.unwrap(), 1500.0, "per mode");
    std::fs::remove_dir_all(&dir).unwrap();
}

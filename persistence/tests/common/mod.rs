//! Test harness shared by the persistence suites: a fresh, migrated store per test (a new
//! SQLite file, or a new Postgres database dropped after), and demo accounts.
//!
//! Postgres is the real server on 127.0.0.1:5432 (`RALLY_TEST_POSTGRES_URL` overrides it).
//! If it is not reachable the test fails and says how to start it.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use rally_persistence::*;

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A fresh, migrated store and what to clean up after it.
pub struct Fresh {
    pub store: Arc<SqlStore>,
    pub cleanup: Cleanup,
}

pub enum Cleanup {
    File(std::path::PathBuf),
    Database { admin_url: String, name: String },
}

static NEXT: AtomicU32 = AtomicU32::new(0);

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

pub async fn fresh(backend: Backend) -> Fresh {
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
    pub async fn done(self) {
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

pub fn new_account(name: &str) -> NewAccount {
    NewAccount {
        username: name.into(),
        email: format!("{name}@example.com"),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        display_name: name.to_uppercase(),
        now_ms: 1_000,
    }
}

/// Each listed `async fn(Arc<SqlStore>)` becomes one test per backend, on a fresh store.
macro_rules! per_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let fresh = crate::common::fresh(rally_persistence::Backend::Sqlite).await;
                    super::$name(fresh.store.clone()).await;
                    fresh.done().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let fresh = crate::common::fresh(rally_persistence::Backend::Postgres).await;
                    super::$name(fresh.store.clone()).await;
                    fresh.done().await;
                }
            )*
        }
    };
}

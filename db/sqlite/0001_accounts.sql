-- Accounts, refresh tokens, profiles, seasons and ratings (SQLite dialect).
-- Times are milliseconds since the Unix epoch; ids are 64-bit integers.

CREATE TABLE accounts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT    NOT NULL UNIQUE,   -- stored lowercased
    email         TEXT    NOT NULL UNIQUE,   -- stored lowercased
    password_hash TEXT    NOT NULL,          -- argon2id PHC string
    created_at_ms INTEGER NOT NULL
);

-- Refresh tokens are stored as SHA-256 hashes, never in the clear. A token is spent
-- when it is rotated; presenting a spent token again revokes its whole family.
CREATE TABLE refresh_tokens (
    token_hash    TEXT    PRIMARY KEY,
    family        TEXT    NOT NULL,
    account_id    INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    issued_at_ms  INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    spent_at_ms   INTEGER,
    revoked_at_ms INTEGER
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family);

CREATE TABLE profiles (
    account_id       INTEGER PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    display_name     TEXT    NOT NULL,
    preferred_region TEXT,
    preferences      TEXT    NOT NULL DEFAULT '{}',  -- a JSON object, validated by the admin API
    updated_at_ms    INTEGER NOT NULL
);

CREATE TABLE seasons (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE,
    starts_at_ms  INTEGER NOT NULL,
    ends_at_ms    INTEGER NOT NULL,
    CHECK (ends_at_ms > starts_at_ms)
);

CREATE TABLE ratings (
    account_id    INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    mode          TEXT    NOT NULL,
    season_id     INTEGER NOT NULL REFERENCES seasons (id),
    mu            REAL    NOT NULL,
    sigma         REAL    NOT NULL,
    games         INTEGER NOT NULL DEFAULT 0,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (account_id, mode, season_id)
);

-- Match results and history (SQLite dialect), written by the write-behind workers.
-- Every write is keyed by the match id, so replaying a batch changes nothing.

CREATE TABLE matches (
    match_id       INTEGER PRIMARY KEY,            -- the engine's id, unique across restarts
    mode           TEXT   NOT NULL,
    season_id      INTEGER NOT NULL REFERENCES seasons (id),
    datacenter     TEXT   NOT NULL,
    formed_at_ms   INTEGER NOT NULL,
    finished_at_ms INTEGER NOT NULL
);

-- One row per player of a rated match: where their team finished and how their rating
-- moved. Mode, season and finish time are copied from the match so a player's history
-- is one index range scan. No foreign keys here, on purpose: this is the write-behind's
-- hottest table and the per-row checks cost a quarter of its throughput. The same
-- transaction writes the match row and the players' ratings, whose foreign key refuses
-- an unknown account, so the rows are checked all the same.
CREATE TABLE match_players (
    match_id       INTEGER          NOT NULL,
    account_id     INTEGER          NOT NULL,
    mode           TEXT             NOT NULL,
    season_id      INTEGER          NOT NULL,
    team           INTEGER          NOT NULL,
    place          INTEGER          NOT NULL,   -- the team's finishing place, 1 = first
    mu_before      REAL             NOT NULL,
    sigma_before   REAL             NOT NULL,
    mu_after       REAL             NOT NULL,
    sigma_after    REAL             NOT NULL,
    finished_at_ms INTEGER          NOT NULL,
    PRIMARY KEY (match_id, account_id)
);
CREATE INDEX match_players_history ON match_players (account_id, finished_at_ms DESC, match_id DESC);

-- Leaderboards order by the display rating, mu − 3·sigma.
CREATE INDEX ratings_leaderboard ON ratings (season_id, mode, (mu - 3 * sigma) DESC, account_id);

-- The web portal: sign-in sessions, single sign-on attempts in flight, and rate-limit windows.
-- None of these is installation state worth a backup: people sign in again.

-- A signed-in browser. The cookie holds a random token; only its SHA-256 is kept here, so a
-- copy of the database does not let anyone take over a session.
CREATE TABLE sessions (
    token_hash   BLOB PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id),
    method       TEXT NOT NULL, -- password | sso
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL, -- for the idle timeout
    expires_at   BIGINT NOT NULL  -- the absolute timeout
);
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

-- A single sign-on that has left for the identity provider and not yet come back. Keyed by
-- SHA-256 of the state parameter; used once. The nonce and the PKCE verifier must be here (not
-- only in the browser) so that whichever server receives the callback can finish it.
CREATE TABLE sso_logins (
    state_hash BLOB PRIMARY KEY,
    nonce      TEXT NOT NULL,
    verifier   TEXT NOT NULL,
    return_to  TEXT NOT NULL DEFAULT '',
    expires_at BIGINT NOT NULL
);
CREATE INDEX sso_logins_by_expiry ON sso_logins (expires_at);

-- Fixed-window counters for sign-in and self-service disclosure, per account and per client
-- address. In the database so that every server behind a load balancer counts together.
CREATE TABLE rate_limits (
    bucket       TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    hits         BIGINT NOT NULL,
    PRIMARY KEY (bucket, window_start)
);
CREATE INDEX rate_limits_by_window ON rate_limits (window_start);

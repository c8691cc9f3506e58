-- Times are microseconds since the Unix epoch (BIGINT), which sorts and compares the same on
-- SQLite and PostgreSQL. Public IDs are text; integer surrogates are internal.

CREATE TABLE seal_check (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    ciphertext  BLOB NOT NULL,
    wrapped_key BLOB NOT NULL
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL,
    email_key     TEXT NOT NULL UNIQUE, -- lower case: sign-in names compare without case
    role          TEXT NOT NULL,
    scope_tags    TEXT NOT NULL DEFAULT '[]',
    password_hash TEXT NOT NULL DEFAULT '',
    created_at    BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id),
    name        TEXT NOT NULL,
    secret_hash BLOB NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE enrollment_tokens (
    id          TEXT PRIMARY KEY,
    secret_hash BLOB NOT NULL,
    uses_left   BIGINT, -- NULL: unlimited
    expires_at  BIGINT, -- NULL: never
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE devices (
    id                    TEXT PRIMARY KEY,
    name                  TEXT NOT NULL,
    owner_upn             TEXT NOT NULL DEFAULT '',
    owner_key             TEXT NOT NULL DEFAULT '', -- lower case, for self-service scope
    serial_number         TEXT NOT NULL DEFAULT '',
    os_version            TEXT NOT NULL DEFAULT '',
    token_id              TEXT NOT NULL UNIQUE,
    token_hash            BLOB NOT NULL,
    verification_key      BLOB NOT NULL, -- sealed
    verification_key_wrap BLOB NOT NULL,
    enrolled_at           BIGINT NOT NULL,
    last_seen_at          BIGINT NOT NULL,
    reported_at           BIGINT
);
CREATE INDEX devices_by_name ON devices (name, id);
CREATE INDEX devices_by_owner ON devices (owner_key);

CREATE TABLE device_tags (
    device_id TEXT NOT NULL REFERENCES devices (id),
    tag       TEXT NOT NULL,
    PRIMARY KEY (device_id, tag)
);
CREATE INDEX device_tags_by_tag ON device_tags (tag);

CREATE TABLE volumes (
    device_id            TEXT NOT NULL REFERENCES devices (id),
    volume_id            TEXT NOT NULL,
    mount_point          TEXT NOT NULL DEFAULT '',
    volume_type          TEXT NOT NULL,
    protection_status    TEXT NOT NULL DEFAULT '',
    encryption_status    TEXT NOT NULL DEFAULT '',
    present              BOOLEAN NOT NULL DEFAULT FALSE,
    missing_escrow_since BIGINT,
    failure              TEXT NOT NULL DEFAULT '',
    failure_at           BIGINT,
    PRIMARY KEY (device_id, volume_id)
);

CREATE TABLE protectors (
    device_id TEXT NOT NULL,
    volume_id TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    type      TEXT NOT NULL,
    PRIMARY KEY (device_id, volume_id, key_id),
    FOREIGN KEY (device_id, volume_id) REFERENCES volumes (device_id, volume_id)
);

-- A key ID is unique per device, not globally: a BitLocker To Go drive moved between computers
-- keeps its protector GUID, and each computer may escrow it.
CREATE TABLE recovery_keys (
    id               INTEGER PRIMARY KEY,
    device_id        TEXT NOT NULL,
    key_id           TEXT NOT NULL,
    volume_id        TEXT NOT NULL,
    kind             TEXT NOT NULL,
    status           TEXT NOT NULL,
    verification     TEXT NOT NULL DEFAULT 'unverified',
    verified_at      BIGINT,
    ciphertext       BLOB, -- NULL once purged
    wrapped_key      BLOB, -- NULL once purged
    created_at       BIGINT NOT NULL,
    superseded_at    BIGINT,
    retain_until     BIGINT,
    last_accessed_at BIGINT,
    access_count     BIGINT NOT NULL DEFAULT 0,
    UNIQUE (device_id, key_id),
    FOREIGN KEY (device_id, volume_id) REFERENCES volumes (device_id, volume_id)
);
CREATE INDEX recovery_keys_by_key_id ON recovery_keys (key_id);
CREATE INDEX recovery_keys_by_retention ON recovery_keys (status, retain_until);

CREATE TABLE rotations (
    id           TEXT PRIMARY KEY,
    device_id    TEXT NOT NULL,
    volume_id    TEXT NOT NULL,
    key_id       TEXT NOT NULL DEFAULT '',
    status       TEXT NOT NULL,
    trigger_kind TEXT NOT NULL,
    reason       TEXT NOT NULL DEFAULT '',
    requested_by TEXT NOT NULL DEFAULT '',
    requested_at BIGINT NOT NULL,
    delivered_at BIGINT,
    finished_at  BIGINT,
    new_key_id   TEXT NOT NULL DEFAULT '',
    message      TEXT NOT NULL DEFAULT '',
    FOREIGN KEY (device_id, volume_id) REFERENCES volumes (device_id, volume_id)
);
-- At most one open rotation per volume: triggers coalesce.
CREATE UNIQUE INDEX rotations_one_open ON rotations (device_id, volume_id) WHERE status IN ('requested', 'delivered');
CREATE INDEX rotations_by_device ON rotations (device_id, requested_at);

-- The head of the audit chain: one row, locked by every append, so that the chain stays one
-- chain however many writers there are.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash BLOB NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32));

CREATE TABLE audit_events (
    seq        BIGINT PRIMARY KEY,
    time       BIGINT NOT NULL,
    actor_type TEXT NOT NULL,
    actor_id   TEXT NOT NULL,
    actor_name TEXT NOT NULL,
    action     TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    source     TEXT NOT NULL,
    reason     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    ip         TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    detail     TEXT NOT NULL,
    hash       BLOB NOT NULL
);
CREATE INDEX audit_events_by_device ON audit_events (device_id, seq);
CREATE INDEX audit_events_by_key ON audit_events (key_id, seq);
CREATE INDEX audit_events_by_action ON audit_events (action, seq);

-- Settings an admin changes at run time; absent names take their defaults.
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

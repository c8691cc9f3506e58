-- First start: one-time setup links that create the first admin. Only the SHA-256 of a link's
-- 256-bit token is kept; a link works for an hour, once, and only while no enabled admin
-- exists. Completing setup deletes every link.
CREATE TABLE setup_tokens (
    token_hash BLOB PRIMARY KEY,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- A single sign-on started from a setup link makes the identity that signs on the first admin.
ALTER TABLE sso_logins ADD COLUMN setup_hash BLOB;

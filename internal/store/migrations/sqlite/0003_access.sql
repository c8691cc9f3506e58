-- Taking access away: a person can be disabled (their sessions end, their API tokens and
-- sign-ins are refused, and enabling them restores both), an enrollment token can be revoked,
-- and an API token records when it was last used, so an admin can tell which one to revoke.

ALTER TABLE users ADD COLUMN disabled_at BIGINT; -- NULL: enabled
ALTER TABLE api_tokens ADD COLUMN last_used_at BIGINT; -- NULL: never used; written at most once a minute
ALTER TABLE enrollment_tokens ADD COLUMN revoked_at BIGINT; -- NULL: not revoked
CREATE INDEX api_tokens_by_user ON api_tokens (user_id);

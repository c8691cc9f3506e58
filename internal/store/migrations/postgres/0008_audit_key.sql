-- The keyed audit chain: the head's MAC (HMAC-SHA256 of its seq and hash under the audit key,
-- which is kept sealed in the check value). NULL until the first start with the master key
-- keys the chain; from then on every append checks and rewrites it.
ALTER TABLE audit_head ADD COLUMN mac BYTEA;

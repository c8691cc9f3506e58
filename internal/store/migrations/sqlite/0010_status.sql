-- Escrow status kept, not recomputed. Every transaction that can move a device's or a volume's
-- status (SPEC §3) stores the status the rules of internal/escrow give, and for a pending
-- status the instant at which it becomes failed by itself (a grace period or a rotation
-- timeout running out): a query at time now reads "failed" for a pending row whose
-- status_until <= now, exactly, whether or not a job has run since. Filters, counts, the
-- escrow report and the census are then index lookups instead of a walk of the fleet.
-- escrow_status '' is "not derived yet": rows from before this migration, derived when the
-- server starts.

ALTER TABLE devices ADD COLUMN escrow_status TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN status_since BIGINT; -- when the condition behind the status began, if known
ALTER TABLE devices ADD COLUMN status_until BIGINT; -- pending only: when it becomes failed by itself
ALTER TABLE devices ADD COLUMN listed_from BIGINT;  -- when the escrow report starts listing the device
ALTER TABLE devices ADD COLUMN status_why TEXT NOT NULL DEFAULT ''; -- the rules' reason, as listings show it
ALTER TABLE devices ADD COLUMN status_missing BOOLEAN NOT NULL DEFAULT FALSE; -- failed for missing escrow
ALTER TABLE devices ADD COLUMN recheck_at BIGINT; -- when the stored result (status or reason) may change by itself
ALTER TABLE devices ADD COLUMN name_key TEXT NOT NULL DEFAULT ''; -- lower case, for search by name prefix
UPDATE devices SET name_key = lower(name); -- SQLite's lower() is ASCII only, as the server's
ALTER TABLE volumes ADD COLUMN escrow_status TEXT NOT NULL DEFAULT '';
ALTER TABLE volumes ADD COLUMN status_until BIGINT;

-- Every filter and order of the device list and the portal's search. Devices in service and
-- retired ones are listed apart, so each has its own index.
DROP INDEX devices_by_name;
CREATE INDEX devices_in_service ON devices (name, id) WHERE retired_at IS NULL;
CREATE INDEX devices_retired ON devices (name, id) WHERE retired_at IS NOT NULL;
CREATE INDEX devices_by_status ON devices (escrow_status, name, id) WHERE retired_at IS NULL;
CREATE INDEX devices_by_until ON devices (status_until) WHERE status_until IS NOT NULL AND retired_at IS NULL;
CREATE INDEX devices_by_recheck ON devices (recheck_at) WHERE recheck_at IS NOT NULL;
CREATE INDEX devices_by_listed ON devices (listed_from, id) WHERE listed_from IS NOT NULL AND retired_at IS NULL;
CREATE INDEX devices_by_name_key ON devices (name_key, id);
DROP INDEX devices_by_owner;
CREATE INDEX devices_by_owner ON devices (owner_key, name, id);

-- What the status rules read for a page of devices, and what a settings change re-derives.
CREATE INDEX recovery_keys_escrowed ON recovery_keys (device_id, volume_id) WHERE status = 'active' AND kind = 'recoveryPassword';
CREATE INDEX recovery_keys_mismatch ON recovery_keys (device_id, volume_id) WHERE status = 'active' AND verification = 'mismatch';
CREATE INDEX volumes_missing_escrow ON volumes (device_id) WHERE missing_escrow_since IS NOT NULL;
CREATE INDEX rotations_delivered ON rotations (delivered_at) WHERE status = 'delivered';
-- The maximum-age job's candidates.
CREATE INDEX recovery_keys_by_age ON recovery_keys (created_at) WHERE status = 'active' AND kind = 'recoveryPassword';

-- The audit log's filters, newest first.
CREATE INDEX audit_events_by_actor_id ON audit_events (actor_id, seq);
CREATE INDEX audit_events_by_actor_name ON audit_events (actor_name, seq);
CREATE INDEX audit_events_by_source ON audit_events (source, seq);
CREATE INDEX audit_events_by_outcome ON audit_events (outcome, seq);
CREATE INDEX audit_events_by_time ON audit_events (time);

-- Devices in service per escrow status and keys per status, kept by triggers in the
-- transaction of every change, so the escrow report's summary and the census read a few rows.
CREATE TABLE status_counts (
    kind   TEXT NOT NULL, -- device | key
    status TEXT NOT NULL,
    n      BIGINT NOT NULL,
    PRIMARY KEY (kind, status)
);
INSERT INTO status_counts (kind, status, n) VALUES
    ('device', 'escrowed', 0), ('device', 'pending', 0), ('device', 'failed', 0), ('device', 'notAvailable', 0),
    ('key', 'active', 0), ('key', 'superseded', 0), ('key', 'purged', 0);
UPDATE status_counts SET n = (SELECT COUNT(*) FROM recovery_keys k WHERE k.status = status_counts.status) WHERE kind = 'key';

CREATE TRIGGER devices_count_insert AFTER INSERT ON devices WHEN new.retired_at IS NULL
BEGIN
    UPDATE status_counts SET n = n + 1 WHERE kind = 'device' AND status = new.escrow_status;
END;
CREATE TRIGGER devices_count_update AFTER UPDATE OF escrow_status, retired_at ON devices
WHEN old.escrow_status <> new.escrow_status OR (old.retired_at IS NULL) <> (new.retired_at IS NULL)
BEGIN
    UPDATE status_counts SET n = n - 1 WHERE kind = 'device' AND status = old.escrow_status AND old.retired_at IS NULL;
    UPDATE status_counts SET n = n + 1 WHERE kind = 'device' AND status = new.escrow_status AND new.retired_at IS NULL;
END;
CREATE TRIGGER devices_count_delete AFTER DELETE ON devices WHEN old.retired_at IS NULL
BEGIN
    UPDATE status_counts SET n = n - 1 WHERE kind = 'device' AND status = old.escrow_status;
END;
CREATE TRIGGER recovery_keys_count_insert AFTER INSERT ON recovery_keys
BEGIN
    UPDATE status_counts SET n = n + 1 WHERE kind = 'key' AND status = new.status;
END;
CREATE TRIGGER recovery_keys_count_update AFTER UPDATE OF status ON recovery_keys WHEN old.status <> new.status
BEGIN
    UPDATE status_counts SET n = n - 1 WHERE kind = 'key' AND status = old.status;
    UPDATE status_counts SET n = n + 1 WHERE kind = 'key' AND status = new.status;
END;
CREATE TRIGGER recovery_keys_count_delete AFTER DELETE ON recovery_keys
BEGIN
    UPDATE status_counts SET n = n - 1 WHERE kind = 'key' AND status = old.status;
END;

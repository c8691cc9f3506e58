-- PostgreSQL twin of migrations/sqlite/0004_retire.sql.
-- Retiring a device: an admin takes a decommissioned or wiped device out of service. Its token
-- is refused, it leaves the device list, the escrow report and the census, and its keys are
-- superseded so that the purge job destroys them when their retention ends.

ALTER TABLE devices ADD COLUMN retired_at BIGINT; -- NULL: in service
ALTER TABLE devices ADD COLUMN retired_by TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN retire_reason TEXT NOT NULL DEFAULT '';

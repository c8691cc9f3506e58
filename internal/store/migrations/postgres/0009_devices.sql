-- PostgreSQL twin of migrations/sqlite/0009_devices.sql.
-- Devices an admin cannot trust, and volumes whose protectors could not be read.
--
-- Key IDs are unique per device only, and a device's owner is whatever its agent claimed at
-- enrollment, so a planted device can claim someone's name and escrow under their key ID. An
-- admin marks such a device disputed: self-service no longer lists it or discloses its keys.
-- A volume reported locked (SPEC §7 lockStatus) has a protector list that is not
-- authoritative: its keys are not superseded because of it.

ALTER TABLE devices ADD COLUMN disputed_at BIGINT; -- NULL: not disputed
ALTER TABLE devices ADD COLUMN disputed_by TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN dispute_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE volumes ADD COLUMN lock_status TEXT NOT NULL DEFAULT ''; -- '' until reported, unlocked | locked

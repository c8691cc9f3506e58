-- Ticket numbers: the incident or change number a view or rotation was made under, kept in its
-- audit event. Events without one keep '' and their hash (the canonical encoding appends a
-- ticket only when there is one).
ALTER TABLE audit_events ADD COLUMN ticket TEXT NOT NULL DEFAULT '';
CREATE INDEX audit_events_by_ticket ON audit_events (ticket, seq);

-- Two-person approval: a staff person's request to view a device's keys, decided by another
-- person. status is pending, approved, denied or used; a pending or approved request past
-- expires_at reads as expired (never stored, so no job is needed). requester and decided_by
-- are sign-in names: a person is the same person through the portal and an API token.
CREATE TABLE approvals (
    id              TEXT PRIMARY KEY,
    device_id       TEXT NOT NULL REFERENCES devices (id),
    requester       TEXT NOT NULL,
    reason          TEXT NOT NULL,
    ticket          TEXT NOT NULL DEFAULT '',
    status          TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    decided_by      TEXT NOT NULL DEFAULT '',
    decided_at      BIGINT,
    decision_reason TEXT NOT NULL DEFAULT '',
    used_at         BIGINT
);
-- The live requests (pending or approved, not lapsed), soonest to lapse first: the queue and
-- its count are this range, however many requests lapsed before.
CREATE INDEX approvals_open ON approvals (status, expires_at, id);
-- The other statuses' listings, newest first.
CREATE INDEX approvals_by_status ON approvals (status, created_at, id);
-- A person's own requests, newest first.
CREATE INDEX approvals_by_requester ON approvals (requester, created_at, id);
-- A view looks for the requester's open request for the device.
CREATE INDEX approvals_by_device ON approvals (device_id, requester, status);

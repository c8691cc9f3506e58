-- Delivery of the audit trail to outside receivers (syslog, webhooks): one row per sink. seq is
-- the last event the sink accepted; the delivery resumes after it. holder and lease_until are
-- the lease: with several servers on one database, one server at a time delivers a sink, and
-- another takes over when the lease runs out. failing_since marks a sink whose last attempt
-- failed, so a server that refuses disclosures while the required sink is down knows it.
CREATE TABLE delivery_cursors (
    sink          TEXT PRIMARY KEY,
    seq           BIGINT NOT NULL,
    holder        TEXT NOT NULL,
    lease_until   BIGINT NOT NULL,
    failing_since BIGINT,
    updated_at    BIGINT NOT NULL
);

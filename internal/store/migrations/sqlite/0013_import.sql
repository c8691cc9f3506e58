-- Keys imported from Active Directory, Entra ID or a file arrive before any agent: a device
-- record made for them has no agent yet (its token was never given out) and is marked here.
-- An agent that later proves it holds one of its keys takes the record's keys over.

ALTER TABLE devices ADD COLUMN imported_at BIGINT; -- NULL: enrolled by its agent

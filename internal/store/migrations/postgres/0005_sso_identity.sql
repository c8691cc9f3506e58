-- PostgreSQL twin of migrations/sqlite/0005_sso_identity.sql.
-- Single sign-on identity and one canonical form of sign-in names and owner UPNs.
--
-- A person signed on through an identity provider is known by the pair (issuer, sub) stored at
-- the first link, never again by email. sso_link_allowed_at is set by an admin
-- ("keyward users link-sso") to let a person with a local password be linked at their next
-- successful sign-on, which clears the password.
ALTER TABLE users ADD COLUMN sso_issuer TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN sso_subject TEXT NOT NULL DEFAULT ''; -- '': not linked
ALTER TABLE users ADD COLUMN sso_link_allowed_at BIGINT; -- NULL: no link allowed for a password account
CREATE UNIQUE INDEX users_by_sso ON users (sso_issuer, sso_subject) WHERE sso_subject <> '';

-- Sign-in names and owner UPNs are lower-case printable ASCII (escrow.CanonicalName); keys were
-- lower-cased with Unicode rules, under which a look-alike such as U+212A (Kelvin sign) became
-- plain "k". Names that are not printable ASCII are kept as they are, but their keys start with
-- a space, which no canonical name holds: they can never match anyone. translate, not lower:
-- lower follows the database's locale, which may not be ASCII's (Turkish dotless i).
UPDATE users SET email_key = ' ' || id WHERE btrim(email, ' ') = '' OR btrim(email, ' ') ~ '[^!-~]';
UPDATE users SET email = translate(btrim(email, ' '), 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'),
    email_key = translate(btrim(email, ' '), 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')
    WHERE email_key NOT LIKE ' %';
UPDATE devices SET owner_key = ' ' || owner_upn WHERE btrim(owner_upn, ' ') ~ '[^!-~]';
UPDATE devices d SET owner_upn = c.name, owner_key = c.name
    FROM (SELECT id, translate(btrim(owner_upn, ' '), 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') AS name
        FROM devices WHERE owner_key NOT LIKE ' %') c
    WHERE d.id = c.id AND (d.owner_upn <> c.name OR d.owner_key <> c.name);

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
-- a space, which no canonical name holds: they can never match anyone.
UPDATE users SET email_key = ' ' || id WHERE TRIM(email) = '' OR TRIM(email) GLOB '*[^!-~]*';
UPDATE users SET email = LOWER(TRIM(email)), email_key = LOWER(TRIM(email)) WHERE email_key NOT LIKE ' %';
UPDATE devices SET owner_key = ' ' || owner_upn WHERE TRIM(owner_upn) GLOB '*[^!-~]*';
UPDATE devices SET owner_upn = LOWER(TRIM(owner_upn)), owner_key = LOWER(TRIM(owner_upn))
    WHERE owner_key NOT LIKE ' %' AND (owner_upn <> LOWER(TRIM(owner_upn)) OR owner_key <> LOWER(TRIM(owner_upn)));

-- Rakor session manager schema, version 2: who may get in, and a record of who did what.
-- Operators can be disabled (their logins and API tokens stop working at once).
ALTER TABLE operators ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
-- Invitation links with their own id (the token's `lid` claim): revocable and reissuable.
CREATE TABLE invitation_links (
    id TEXT PRIMARY KEY,
    rakor_id INTEGER NOT NULL REFERENCES rakor(id) ON DELETE CASCADE,
    site_id INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX invitation_links_site ON invitation_links(rakor_id, site_id);
-- Admissions are per link: a reissued link waits in the lobby again. Version-1 admissions
-- (per identity, without a link) are dropped: version-1 links carry no link id and no longer
-- admit anyone.
DROP TABLE admissions;
CREATE TABLE admissions (
    rakor_id INTEGER NOT NULL REFERENCES rakor(id) ON DELETE CASCADE,
    identity TEXT NOT NULL,
    link_id TEXT NOT NULL,
    admitted_at INTEGER NOT NULL,
    PRIMARY KEY (rakor_id, identity, link_id)
);
-- Identities refused in a room, whatever their token (plain `rakor token` tokens included).
CREATE TABLE bans (
    id INTEGER PRIMARY KEY,
    room TEXT NOT NULL,
    identity TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    UNIQUE (room, identity)
);
-- The audit log: logins, operator changes, moderation, link reissue/revoke.
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    address TEXT NOT NULL DEFAULT '',
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
);

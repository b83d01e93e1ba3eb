-- Rakor session manager schema, version 1. Times are Unix seconds (UTC) unless named *_ms.
CREATE TABLE operators (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE login_sessions (
    token_hash TEXT PRIMARY KEY,
    operator_id INTEGER NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY,
    operator_id INTEGER NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE sites (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    contact_person TEXT NOT NULL DEFAULT '',
    phone TEXT NOT NULL DEFAULT '',
    active INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE rakor (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    agenda TEXT NOT NULL DEFAULT '',
    room TEXT NOT NULL,
    start_at INTEGER NOT NULL,
    end_at INTEGER NOT NULL,
    host_site_id INTEGER NOT NULL REFERENCES sites(id),
    state TEXT NOT NULL DEFAULT 'scheduled',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX rakor_room ON rakor(room);
CREATE TABLE rakor_invites (
    rakor_id INTEGER NOT NULL REFERENCES rakor(id) ON DELETE CASCADE,
    site_id INTEGER NOT NULL REFERENCES sites(id),
    PRIMARY KEY (rakor_id, site_id)
);
CREATE TABLE attendance_events (
    id INTEGER PRIMARY KEY,
    rakor_id INTEGER NOT NULL REFERENCES rakor(id) ON DELETE CASCADE,
    identity TEXT NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    participant TEXT NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT,
    at_ms INTEGER NOT NULL
);
CREATE INDEX attendance_rakor ON attendance_events(rakor_id, at_ms);
CREATE TABLE admissions (
    rakor_id INTEGER NOT NULL REFERENCES rakor(id) ON DELETE CASCADE,
    identity TEXT NOT NULL,
    admitted_at INTEGER NOT NULL,
    PRIMARY KEY (rakor_id, identity)
);

-- Rakor session manager schema, version 3: the rakor's record (minutes) besides attendance.
-- Chat messages the server delivered (refused ones are never stored).
CREATE TABLE chat_messages (
    id INTEGER PRIMARY KEY,
    rakor_id INTEGER NOT NULL REFERENCES rakor(id) ON DELETE CASCADE,
    msg_id TEXT NOT NULL,
    from_participant TEXT NOT NULL,
    from_identity TEXT NOT NULL,
    from_name TEXT NOT NULL,
    -- A private message from the host: its addressee.
    to_participant TEXT,
    to_identity TEXT,
    to_name TEXT,
    text TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX chat_messages_rakor ON chat_messages(rakor_id, at_ms);
-- The room's timeline: hands, the floor, the spotlight, presentations, recordings. `kind` is the
-- event's name (hand_raised, floor_given, spotlight_set, presentation_started, ...).
CREATE TABLE room_events (
    id INTEGER PRIMARY KEY,
    rakor_id INTEGER NOT NULL REFERENCES rakor(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    participant TEXT,
    identity TEXT,
    name TEXT,
    by_name TEXT,
    detail TEXT,
    at_ms INTEGER NOT NULL
);
CREATE INDEX room_events_rakor ON room_events(rakor_id, at_ms);

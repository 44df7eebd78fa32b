-- The schema of invited's SQLite database (data_dir/invited.db).
--
-- This file is the one source of the schema. It is embedded in the binary and applied in
-- sections: each "-- migration N: ..." section runs once, in order, inside a transaction, and
-- `PRAGMA user_version` records the last one applied. Never edit a released section; add a new
-- one. The tables are a public interface for operators and for the homeserver that hosts this
-- module, so every column is described here.
--
-- Times are integers: milliseconds since the Unix epoch (UTC), like Matrix's own timestamps.

-- migration 1: our own server keys
-- Our ed25519 public keys, current and retired. The private seed is never stored here: it
-- lives only in data_dir/signing.key, so this file can be handed to someone for inspection.
CREATE TABLE our_keys (
    -- Key ID as published, e.g. 'ed25519:a_Xy12'.
    key_id      TEXT PRIMARY KEY NOT NULL,
    -- Public key, unpadded standard base64 (what /_matrix/key/v2/server publishes).
    public_key  TEXT NOT NULL,
    -- When this key was first used by this server.
    created_ts  INTEGER NOT NULL,
    -- NULL while the key is current (in verify_keys); when it was retired otherwise (it is
    -- then published in old_verify_keys with this expired_ts).
    expired_ts  INTEGER,
    CHECK (expired_ts IS NULL OR expired_ts >= created_ts)
) STRICT;
-- At most one current key.
CREATE UNIQUE INDEX our_keys_one_current ON our_keys ((expired_ts IS NULL)) WHERE expired_ts IS NULL;

-- migration 2: other servers' keys
-- Public keys of other homeservers, as fetched from them (or from a notary), to check request
-- and event signatures. One row per (server, key ID).
CREATE TABLE remote_keys (
    -- The server the key belongs to, e.g. 'matrix.org'.
    server_name     TEXT NOT NULL,
    -- Key ID, e.g. 'ed25519:a_Xy12'.
    key_id          TEXT NOT NULL,
    -- Public key, unpadded standard base64.
    public_key      TEXT NOT NULL,
    -- For keys listed in verify_keys: the response's valid_until_ts (we cap it at
    -- fetched_ts + 7 days when using it). NULL for keys only seen in old_verify_keys.
    valid_until_ts  INTEGER,
    -- For keys listed in old_verify_keys: when the server retired the key. NULL otherwise.
    expired_ts      INTEGER,
    -- When we fetched the response this row came from.
    fetched_ts      INTEGER NOT NULL,
    -- Who served it: the server itself, or the name of the notary we asked.
    fetched_from    TEXT NOT NULL,
    PRIMARY KEY (server_name, key_id)
) STRICT;

-- migration 3: invites
-- Every invite we co-signed and answered 200 for. A row here exists only for answered
-- invites: the row is committed before the answer is sent.
CREATE TABLE invites (
    -- The invite event's ID: its event_id field (room versions 1–2) or the ID computed from
    -- its reference hash (3+). Matches the {eventId} of the request path.
    event_id          TEXT PRIMARY KEY NOT NULL,
    -- The room the user is invited to (the event's room_id).
    room_id           TEXT NOT NULL,
    -- The room version the invite was checked against ('1' … '12').
    room_version      TEXT NOT NULL,
    -- The invited local user (the event's state_key), e.g. '@bob:our.server'.
    invitee           TEXT NOT NULL,
    -- The inviting user (the event's sender).
    sender            TEXT NOT NULL,
    -- The authenticated server that sent the request (the sender's server).
    origin            TEXT NOT NULL,
    -- The event's origin_server_ts (as sent; the inviter's clock).
    origin_server_ts  INTEGER NOT NULL,
    -- When we received and answered it (our clock).
    received_ts       INTEGER NOT NULL,
    -- 'pending' until the hosting homeserver or an operator acts; 'accepted', 'rejected',
    -- or 'ignored' (co-signed, but kept out of the user's view by policy).
    state             TEXT NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending', 'accepted', 'rejected', 'ignored')),
    -- When state last changed (NULL while never changed).
    state_changed_ts  INTEGER,
    -- Which endpoint it came through: 1 (/v1/invite) or 2 (/v2/invite).
    api_version       INTEGER NOT NULL CHECK (api_version IN (1, 2)),
    -- SHA-256 (unpadded base64) of the received event's canonical JSON without `unsigned`:
    -- how a retry is recognised as the same invite.
    event_fingerprint TEXT NOT NULL,
    -- The co-signed event exactly as answered (canonical JSON; includes `unsigned`).
    signed_event      TEXT NOT NULL,
    -- The exact response body we sent, replayed byte for byte on a retry.
    response_body     TEXT NOT NULL
) STRICT;
CREATE INDEX invites_by_invitee ON invites (invitee, state);
CREATE INDEX invites_by_origin ON invites (origin, received_ts);

-- The room state that came with an invite (invite_room_state), in the order received.
CREATE TABLE invite_room_state (
    event_id   TEXT NOT NULL REFERENCES invites (event_id) ON DELETE CASCADE,
    -- Position in the invite_room_state array (0-based).
    position   INTEGER NOT NULL,
    -- The client form (stripped state): type, state_key, sender, content (JSON text).
    type       TEXT NOT NULL,
    state_key  TEXT NOT NULL,
    sender     TEXT NOT NULL,
    content    TEXT NOT NULL,
    -- The full PDU as received (canonical JSON) when the entry was one; NULL for stripped
    -- entries. Unverified hints unless the room version required checking them (v12).
    pdu        TEXT,
    PRIMARY KEY (event_id, position)
) STRICT;

-- Problems found in an accepted invite that did not refuse it (e.g. room versions 1–11
-- whose invite_room_state fails the MSC4311 checks, which the spec says to warn about).
CREATE TABLE invite_warnings (
    event_id  TEXT NOT NULL REFERENCES invites (event_id) ON DELETE CASCADE,
    warning   TEXT NOT NULL
) STRICT;
CREATE INDEX invite_warnings_by_event ON invite_warnings (event_id);

-- Pending invites with the client-facing invite_state array: stripped events, except the
-- create event of a room version 12 room, which clients get as the full PDU (MSC4311) so
-- they can check the room ID.
CREATE VIEW pending_invites AS
SELECT
    i.event_id, i.room_id, i.room_version, i.invitee, i.sender, i.origin,
    i.origin_server_ts, i.received_ts,
    (SELECT json_group_array(json(
                CASE WHEN s.type = 'm.room.create' AND s.state_key = '' AND s.pdu IS NOT NULL
                          AND i.room_version = '12'
                     THEN s.pdu
                     ELSE json_object('type', s.type, 'state_key', s.state_key,
                                      'sender', s.sender, 'content', json(s.content))
                END))
       FROM (SELECT * FROM invite_room_state s2 WHERE s2.event_id = i.event_id
             ORDER BY s2.position) AS s) AS invite_state,
    i.signed_event
FROM invites AS i
WHERE i.state = 'pending';

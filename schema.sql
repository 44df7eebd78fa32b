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
    -- The exact response body we sent, replayed byte for byte on a retry. Computed from
    -- signed_event (not stored twice): {"event":…} for v2, [200,{"event":…}] for v1.
    response_body     TEXT GENERATED ALWAYS AS (
                          CASE api_version
                              WHEN 1 THEN '[200,{"event":' || signed_event || '}]'
                              ELSE '{"event":' || signed_event || '}'
                          END) VIRTUAL
) STRICT;
CREATE INDEX invites_by_invitee ON invites (invitee, state);
CREATE INDEX invites_by_origin ON invites (origin, received_ts);

-- Full PDUs from invite_room_state, stored once however many invites carry them (a wave of
-- invites to one room repeats the same create event and state).
CREATE TABLE pdus (
    -- SHA-256 (unpadded base64) of the canonical JSON below.
    sha256  TEXT PRIMARY KEY NOT NULL,
    -- The PDU exactly as received, as canonical JSON.
    pdu     TEXT NOT NULL
) STRICT;

-- The room state that came with an invite (invite_room_state), in the order received.
CREATE TABLE invite_room_state (
    event_id    TEXT NOT NULL REFERENCES invites (event_id) ON DELETE CASCADE,
    -- Position in the invite_room_state array (0-based).
    position    INTEGER NOT NULL,
    -- The client form (stripped state): type, state_key, sender, content (JSON text).
    type        TEXT NOT NULL,
    state_key   TEXT NOT NULL,
    sender      TEXT NOT NULL,
    content     TEXT NOT NULL,
    -- The full PDU (in pdus) when the entry was one; NULL for stripped entries. Unverified
    -- hints unless the room version required checking them (v12).
    pdu_sha256  TEXT REFERENCES pdus (sha256),
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
                CASE WHEN s.type = 'm.room.create' AND s.state_key = '' AND p.pdu IS NOT NULL
                          AND i.room_version = '12'
                     THEN p.pdu
                     ELSE json_object('type', s.type, 'state_key', s.state_key,
                                      'sender', s.sender, 'content', json(s.content))
                END))
       FROM (SELECT * FROM invite_room_state s2 WHERE s2.event_id = i.event_id
             ORDER BY s2.position) AS s
       LEFT JOIN pdus AS p ON p.sha256 = s.pdu_sha256) AS invite_state,
    i.signed_event
FROM invites AS i
WHERE i.state = 'pending';

-- migration 4: invite policy, users, refusal log
-- Operator rules on servers and users. Changes take effect on the next request (a trigger
-- bumps policy_version, which the server checks before each policy decision).
CREATE TABLE policy_rules (
    -- 'server': pattern is a glob over server names without port ('*.example.org'),
    -- matched against the origin, the inviter's server and the room ID's server.
    -- 'user': pattern is a glob over full user IDs, matched against the inviter.
    kind        TEXT NOT NULL CHECK (kind IN ('server', 'user')),
    pattern     TEXT NOT NULL,
    -- 'deny': refuse (403 M_FORBIDDEN). 'allow': with allow_list_mode on, only servers
    -- matching an allow rule may invite. 'ignore': co-sign and answer 200 as usual, but store
    -- the invite as 'ignored' (the sender learns nothing).
    action      TEXT NOT NULL CHECK (action IN ('deny', 'allow', 'ignore')),
    -- 'config' for rules from the config file (replaced at each start), 'cli' or anything
    -- else for rules added later (kept).
    source      TEXT NOT NULL DEFAULT 'cli',
    created_ts  INTEGER NOT NULL,
    PRIMARY KEY (kind, pattern, action)
) STRICT;

-- Switches: 'refuse_all' (refuse every invite), 'allow_list_mode' (only allowed servers),
-- 'known_users_only' (only invitees listed in local_users). Values 'true' or 'false'.
CREATE TABLE policy_settings (
    name   TEXT PRIMARY KEY NOT NULL
           CHECK (name IN ('refuse_all', 'allow_list_mode', 'known_users_only')),
    value  TEXT NOT NULL CHECK (value IN ('true', 'false'))
) STRICT;

-- Bumped by triggers whenever rules or settings change; one row.
CREATE TABLE policy_version (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    version  INTEGER NOT NULL
) STRICT;
INSERT INTO policy_version (id, version) VALUES (1, 0);
CREATE TRIGGER policy_rules_ins AFTER INSERT ON policy_rules
    BEGIN UPDATE policy_version SET version = version + 1; END;
CREATE TRIGGER policy_rules_del AFTER DELETE ON policy_rules
    BEGIN UPDATE policy_version SET version = version + 1; END;
CREATE TRIGGER policy_rules_upd AFTER UPDATE ON policy_rules
    BEGIN UPDATE policy_version SET version = version + 1; END;
CREATE TRIGGER policy_settings_ins AFTER INSERT ON policy_settings
    BEGIN UPDATE policy_version SET version = version + 1; END;
CREATE TRIGGER policy_settings_del AFTER DELETE ON policy_settings
    BEGIN UPDATE policy_version SET version = version + 1; END;
CREATE TRIGGER policy_settings_upd AFTER UPDATE ON policy_settings
    BEGIN UPDATE policy_version SET version = version + 1; END;

-- Our users, as the hosting homeserver knows them (used by known_users_only), with their
-- invite settings stored as the JSON a client sets as account data, so a homeserver can copy
-- account data in unchanged.
CREATE TABLE local_users (
    user_id                   TEXT PRIMARY KEY NOT NULL,
    -- Content of m.invite_permission_config (spec v1.18, MSC4380): {"default_action": "block"}
    -- refuses every invite with 403 M_INVITE_BLOCKED.
    invite_permission_config  TEXT,
    -- Content of org.matrix.msc4155.invite_permission_config (MSC4155): allowed/ignored/
    -- blocked users and servers, evaluated in the MSC's order.
    msc4155_config            TEXT,
    -- Content of m.ignored_user_list: invites from these users are ignored.
    ignored_user_list         TEXT
) STRICT;

-- Every refused invite that passed request authentication: what an operator reads after a
-- spam wave. Pruned by age and count (see [policy] in the README).
CREATE TABLE refusals (
    id        INTEGER PRIMARY KEY,
    ts        INTEGER NOT NULL,
    origin    TEXT NOT NULL,
    -- As far as the request got: NULL when the body did not say.
    sender    TEXT,
    invitee   TEXT,
    room_id   TEXT,
    event_id  TEXT,
    -- The rule or check that refused it, e.g. 'server deny *.spam.example' or 'signature'.
    rule      TEXT NOT NULL,
    errcode   TEXT NOT NULL,
    status    INTEGER NOT NULL
) STRICT;
CREATE INDEX refusals_by_ts ON refusals (ts);
CREATE INDEX refusals_by_origin ON refusals (origin, ts);

-- Refusals per origin server per day (UTC).
CREATE VIEW refusals_per_server_per_day AS
SELECT origin, date(ts / 1000, 'unixepoch') AS day, count(*) AS refusals,
       group_concat(DISTINCT errcode) AS errcodes
FROM refusals GROUP BY origin, day ORDER BY day DESC, refusals DESC;

-- Pending invites for humans: who invited whom to which room (name from the stripped state),
-- and how long ago.
CREATE VIEW pending_invites_readable AS
SELECT i.invitee, i.sender AS inviter, i.origin,
       (SELECT json_extract(s.content, '$.name') FROM invite_room_state s
         WHERE s.event_id = i.event_id AND s.type = 'm.room.name' AND s.state_key = ''
         LIMIT 1) AS room_name,
       i.room_id,
       CAST((strftime('%s', 'now') * 1000 - i.received_ts) / 60000 AS INTEGER) AS age_minutes,
       i.event_id
FROM invites AS i
WHERE i.state = 'pending'
ORDER BY i.received_ts DESC;

-- migration 5: one definition of the answer, the client view's room-version fact stored, and
-- the refusal log's count of what its rate limit left out
-- The answer's body is built around signed_event by the code, in one place, for whichever
-- endpoint asks ({"event":…} for v2, [200,{"event":…}] for v1); a second definition here
-- could drift from it.
ALTER TABLE invites DROP COLUMN response_body;
-- 1 when clients get the room's create event as the full PDU in invite_state, not stripped:
-- rooms whose ID is the create event's hash, so a client can check it (MSC4311). Set from the
-- code's room-version table.
ALTER TABLE invites ADD COLUMN create_event_as_pdu INTEGER NOT NULL DEFAULT 0
    CHECK (create_event_as_pdu IN (0, 1));
-- Invites stored before: those room IDs are the only ones without a ':server' part.
UPDATE invites SET create_event_as_pdu = 1 WHERE instr(room_id, ':') = 0;
-- Refusals of the same origin left out of the log by its rate limit since that origin's
-- previous row (so a flood costs one row per second or so, and is still counted).
ALTER TABLE refusals ADD COLUMN suppressed INTEGER NOT NULL DEFAULT 0;
-- Pending invites with the client-facing invite_state array: stripped events, except the
-- create event where create_event_as_pdu says clients need the full PDU.
DROP VIEW pending_invites;
CREATE VIEW pending_invites AS
SELECT
    i.event_id, i.room_id, i.room_version, i.invitee, i.sender, i.origin,
    i.origin_server_ts, i.received_ts,
    (SELECT json_group_array(json(
                CASE WHEN s.type = 'm.room.create' AND s.state_key = '' AND p.pdu IS NOT NULL
                          AND i.create_event_as_pdu = 1
                     THEN p.pdu
                     ELSE json_object('type', s.type, 'state_key', s.state_key,
                                      'sender', s.sender, 'content', json(s.content))
                END))
       FROM (SELECT * FROM invite_room_state s2 WHERE s2.event_id = i.event_id
             ORDER BY s2.position) AS s
       LEFT JOIN pdus AS p ON p.sha256 = s.pdu_sha256) AS invite_state,
    i.signed_event
FROM invites AS i
WHERE i.state = 'pending';

-- migration 6: the rest of an invite's life — rejecting it over federation, the inviter
-- withdrawing it — and the outbox that delivers what must reach other servers
-- The invites table again, for its new states (SQLite cannot change a CHECK in place):
--   pending           answered 200, waiting for the user
--   ignored           answered 200, hidden from the user by policy
--   accepted          the host joined the room (set by the host)
--   rejecting         the user said no; invited is delivering the rejection (make_leave +
--                     send_leave to a server of the room). Setting this state is how the host
--                     asks for it: UPDATE invites SET state = 'rejecting' WHERE event_id = ?
--   rejected          a server of the room accepted our leave event (see rejections); a host
--                     writing 'rejected' directly means "rejected here, nothing sent" as before
--   rejected_locally  delivery gave up, or the rejection was local only: nobody in the room
--                     was told, the inviter still sees the invite
--   rescinded         the inviter withdrew the invite (their leave or ban event, in rescinds)
CREATE TABLE invites_new (
    event_id          TEXT PRIMARY KEY NOT NULL,
    room_id           TEXT NOT NULL,
    room_version      TEXT NOT NULL,
    invitee           TEXT NOT NULL,
    sender            TEXT NOT NULL,
    origin            TEXT NOT NULL,
    origin_server_ts  INTEGER NOT NULL,
    received_ts       INTEGER NOT NULL,
    state             TEXT NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending', 'ignored', 'accepted', 'rejecting',
                                       'rejected', 'rejected_locally', 'rescinded')),
    state_changed_ts  INTEGER,
    api_version       INTEGER NOT NULL CHECK (api_version IN (1, 2)),
    event_fingerprint TEXT NOT NULL,
    signed_event      TEXT NOT NULL,
    create_event_as_pdu INTEGER NOT NULL DEFAULT 0 CHECK (create_event_as_pdu IN (0, 1))
) STRICT;
INSERT INTO invites_new
SELECT event_id, room_id, room_version, invitee, sender, origin, origin_server_ts, received_ts,
       state, state_changed_ts, api_version, event_fingerprint, signed_event,
       create_event_as_pdu
FROM invites;
DROP VIEW pending_invites;
DROP VIEW pending_invites_readable;
DROP TABLE invites;
ALTER TABLE invites_new RENAME TO invites;
CREATE INDEX invites_by_invitee ON invites (invitee, state);
CREATE INDEX invites_by_origin ON invites (origin, received_ts);
-- A rescind names the room and the invitee.
CREATE INDEX invites_by_room ON invites (room_id, invitee);
CREATE VIEW pending_invites AS
SELECT
    i.event_id, i.room_id, i.room_version, i.invitee, i.sender, i.origin,
    i.origin_server_ts, i.received_ts,
    (SELECT json_group_array(json(
                CASE WHEN s.type = 'm.room.create' AND s.state_key = '' AND p.pdu IS NOT NULL
                          AND i.create_event_as_pdu = 1
                     THEN p.pdu
                     ELSE json_object('type', s.type, 'state_key', s.state_key,
                                      'sender', s.sender, 'content', json(s.content))
                END))
       FROM (SELECT * FROM invite_room_state s2 WHERE s2.event_id = i.event_id
             ORDER BY s2.position) AS s
       LEFT JOIN pdus AS p ON p.sha256 = s.pdu_sha256) AS invite_state,
    i.signed_event
FROM invites AS i
WHERE i.state = 'pending';
CREATE VIEW pending_invites_readable AS
SELECT i.invitee, i.sender AS inviter, i.origin,
       (SELECT json_extract(s.content, '$.name') FROM invite_room_state s
         WHERE s.event_id = i.event_id AND s.type = 'm.room.name' AND s.state_key = ''
         LIMIT 1) AS room_name,
       i.room_id,
       CAST((strftime('%s', 'now') * 1000 - i.received_ts) / 60000 AS INTEGER) AS age_minutes,
       i.event_id
FROM invites AS i
WHERE i.state = 'pending'
ORDER BY i.received_ts DESC;

-- Work that must reach another server, kept until it is delivered or given up: one row per
-- thing to deliver, whatever its kind. The running server picks up due rows (it looks at
-- least every second), one delivery at a time per row; a row survives restarts and crashes.
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY,
    -- What is delivered: 'rejection' (subject: the invite's event ID; details in rejections).
    kind             TEXT NOT NULL,
    subject          TEXT NOT NULL,
    created_ts       INTEGER NOT NULL,
    -- Delivery attempts made so far, when the next is due, and why the last one failed.
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_ts  INTEGER NOT NULL,
    last_error       TEXT,
    -- NULL while there is work left; when it was delivered or given up otherwise.
    finished_ts      INTEGER,
    UNIQUE (kind, subject)
) STRICT;
CREATE INDEX outbox_due ON outbox (next_attempt_ts) WHERE finished_ts IS NULL;

-- Rejections asked for (invites.state 'rejecting' and after): what the user said, and what
-- delivery did. Attempts, errors and timing are in the outbox row (kind 'rejection').
CREATE TABLE rejections (
    event_id        TEXT PRIMARY KEY NOT NULL REFERENCES invites (event_id) ON DELETE CASCADE,
    -- The reason the user gave (content.reason of our leave event), if any.
    reason          TEXT,
    requested_ts    INTEGER NOT NULL,
    -- Our signed leave event (canonical JSON) and its ID: stored before it is first sent, so
    -- a retry resends exactly this event to leave_server, the server whose template it is.
    leave_event     TEXT,
    leave_event_id  TEXT,
    leave_server    TEXT,
    -- Servers that refused for good (a 4xx that will not change), as a JSON array.
    refused_by      TEXT NOT NULL DEFAULT '[]',
    -- The server whose send_leave answered 200.
    accepted_by     TEXT
) STRICT;

-- Setting an invite to 'rejecting' (the CLI, or the host's own UPDATE) asks for delivery.
CREATE TRIGGER invites_rejecting AFTER UPDATE OF state ON invites
WHEN NEW.state = 'rejecting' AND OLD.state <> 'rejecting'
BEGIN
    INSERT OR IGNORE INTO rejections (event_id, requested_ts)
    VALUES (NEW.event_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
    INSERT OR IGNORE INTO outbox (kind, subject, created_ts, next_attempt_ts)
    VALUES ('rejection', NEW.event_id,
            CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
            CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

-- Invites the inviter withdrew: their leave (a kick) or ban event, received in a /send
-- transaction and checked (signed by the inviter's server, sent by the inviter, naming the
-- invite among its auth_events).
CREATE TABLE rescinds (
    invite_event_id TEXT PRIMARY KEY NOT NULL REFERENCES invites (event_id) ON DELETE CASCADE,
    -- The withdrawing event's ID, and the PDU as received (canonical JSON).
    event_id        TEXT NOT NULL,
    pdu             TEXT NOT NULL,
    -- The server that sent the transaction, and when we received it.
    origin          TEXT NOT NULL,
    received_ts     INTEGER NOT NULL
) STRICT;

-- /send transactions that changed something, with the answer we gave, so that a retry of the
-- same (origin, txn_id) gets the same answer and no second effect. Kept a day (the sender
-- retries within minutes).
CREATE TABLE transactions (
    origin       TEXT NOT NULL,
    txn_id       TEXT NOT NULL,
    received_ts  INTEGER NOT NULL,
    response     TEXT NOT NULL,
    PRIMARY KEY (origin, txn_id)
) STRICT;
CREATE INDEX transactions_by_ts ON transactions (received_ts);

-- migration 7: telling people — pushers and their notifications, and the change log
-- Pushers: where to send a push notification when a local user is invited, with the fields a
-- client gives POST /_matrix/client/v3/pushers/set for kind "http", so a hosting homeserver
-- can copy its rows here unchanged. One row per (user_id, app_id, pushkey); setting the same
-- app_id and pushkey again replaces the row (the client API's rule).
CREATE TABLE pushers (
    -- Never reused (AUTOINCREMENT): outbox rows name their pusher by it.
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The local user, e.g. '@bob:our.server'.
    user_id             TEXT NOT NULL,
    app_id              TEXT NOT NULL,
    pushkey             TEXT NOT NULL,
    kind                TEXT NOT NULL DEFAULT 'http' CHECK (kind = 'http'),
    app_display_name    TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag         TEXT,
    lang                TEXT NOT NULL,
    -- The pusher's data object (JSON): url, the gateway's .../_matrix/push/v1/notify;
    -- format, 'event_id_only' or absent; any other fields, forwarded to the gateway.
    data                TEXT NOT NULL
                        CHECK (json_valid(data) AND json_type(data, '$.url') IS 'text'),
    -- When the pushkey was set (sent to the gateway as pushkey_ts, in seconds).
    pushkey_ts          INTEGER NOT NULL,
    UNIQUE (user_id, app_id, pushkey)
) STRICT;

-- A new pending invite (not ignored, not a retry: a retry inserts nothing) queues one push
-- notification per pusher of its invitee, in the transaction that stores it. Outbox kind
-- 'push', subject '<pusher id> <invite event ID>': one notification per (invite, pusher).
CREATE TRIGGER invites_push AFTER INSERT ON invites
WHEN NEW.state = 'pending'
BEGIN
    INSERT OR IGNORE INTO outbox (kind, subject, created_ts, next_attempt_ts)
    SELECT 'push', p.id || ' ' || NEW.event_id, NEW.received_ts, NEW.received_ts
    FROM pushers AS p WHERE p.user_id = NEW.invitee;
END;

-- A removed pusher (by the operator, or because its gateway rejected the pushkey) gets no
-- more notifications.
CREATE TRIGGER pushers_removed AFTER DELETE ON pushers
BEGIN
    UPDATE outbox
    SET finished_ts = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
        last_error = 'the pusher was removed'
    WHERE kind = 'push' AND finished_ts IS NULL
      AND subject >= OLD.id || ' ' AND subject < OLD.id || '!';
END;

-- The change log: one row per new invite and per change of an invite's state, in order. A
-- consumer (`invited invites watch`, or the hosting homeserver by SQL) remembers the last
-- cursor it handled and asks for the rows after it:
--   SELECT * FROM invite_changes WHERE cursor > ? ORDER BY cursor
-- Written by triggers in the same transaction as the change. Rows are deleted by retention
-- with the finished invites' age ([retention] finished_invites_days).
CREATE TABLE invite_changes (
    -- Increases with every row and is never reused (AUTOINCREMENT), even after deletions.
    cursor    INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id  TEXT NOT NULL,
    room_id   TEXT NOT NULL,
    invitee   TEXT NOT NULL,
    sender    TEXT NOT NULL,
    -- The invite's state after the change (invites.state).
    state     TEXT NOT NULL,
    -- When: received_ts for a new invite; for a change, the state_changed_ts it set, or now.
    ts        INTEGER NOT NULL
) STRICT;
-- What was there before the log existed, in the order it arrived.
INSERT INTO invite_changes (event_id, room_id, invitee, sender, state, ts)
SELECT event_id, room_id, invitee, sender, state, coalesce(state_changed_ts, received_ts)
FROM invites ORDER BY coalesce(state_changed_ts, received_ts), event_id;
CREATE TRIGGER invite_changes_new AFTER INSERT ON invites
BEGIN
    INSERT INTO invite_changes (event_id, room_id, invitee, sender, state, ts)
    VALUES (NEW.event_id, NEW.room_id, NEW.invitee, NEW.sender, NEW.state, NEW.received_ts);
END;
CREATE TRIGGER invite_changes_state AFTER UPDATE OF state ON invites
WHEN NEW.state IS NOT OLD.state
BEGIN
    INSERT INTO invite_changes (event_id, room_id, invitee, sender, state, ts)
    VALUES (NEW.event_id, NEW.room_id, NEW.invitee, NEW.sender, NEW.state,
            CASE WHEN NEW.state_changed_ts IS NOT OLD.state_changed_ts
                 THEN NEW.state_changed_ts
                 ELSE CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) END);
END;

-- migration 8: room state stored once, in the invite's row
-- An entry of invite_room_state that came as a full PDU was stored twice: its stripped form
-- (type, state_key, sender, content) in invite_room_state and the PDU itself in pdus, and
-- each entry was a row keyed by the 44-byte event ID. Now each invite keeps its room state as
-- one small JSON array in invites.room_state, in the order received, one element per entry:
--   12345                                 the PDU with this pdus.id (the entry was that PDU)
--   {"content":{…},"sender":…,"state_key":…,"type":…}
--                                         a stripped entry (with "pdu":12345 when it came
--                                         with a PDU whose own fields differ from these;
--                                         readers take the fields by name, in any order)
-- invite_room_state is now a view with the same columns as the table it replaces (plus
-- pdu_id), reading the stripped fields from the PDU where the entry is one.
-- pdus gets an integer id, and loses the index on sha256: keeping it cost every invite of the
-- real shape four index pages written at random places per commit (a quarter of the writer's
-- time). The server finds a PDU it stored lately by its own memory of their hashes, so a
-- wave of invites to one room stores its room state once; after a restart the same PDU may be
-- stored once more. Look one up by hash with a scan: SELECT id FROM pdus WHERE sha256 = ?.
-- Nothing but retention may delete from pdus: no foreign key can see the references inside the
-- arrays. Ids are AUTOINCREMENT, so a PDU deleted by hand leaves its invites' entries empty
-- (NULL fields) rather than showing another PDU under the same id.
CREATE TABLE pdus_new (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    -- SHA-256 (unpadded base64) of the canonical JSON below.
    sha256  TEXT NOT NULL,
    -- The PDU exactly as received, as canonical JSON.
    pdu     TEXT NOT NULL
) STRICT;
INSERT INTO pdus_new (id, sha256, pdu) SELECT rowid, sha256, pdu FROM pdus ORDER BY rowid;
ALTER TABLE invites ADD COLUMN room_state TEXT NOT NULL DEFAULT '[]';
-- Entries that came as PDUs lose the stripped copy where it is exactly the PDU's.
UPDATE invites SET room_state = (
    SELECT json_group_array(CASE WHEN same THEN s.id
                                 WHEN s.id IS NULL THEN json(stripped)
                                 ELSE json_insert(stripped, '$.pdu', s.id) END)
    FROM (SELECT s.*, p.rowid AS id,
                 json_object('type', s.type, 'state_key', s.state_key, 'sender', s.sender,
                             -- (content was always JSON; were it not, it stays its own text)
                             'content', CASE WHEN json_valid(s.content) THEN json(s.content)
                                             ELSE s.content END) AS stripped,
                 (p.pdu IS NOT NULL
                  AND s.type IS json_extract(p.pdu, '$.type')
                  AND s.state_key IS json_extract(p.pdu, '$.state_key')
                  AND s.sender IS json_extract(p.pdu, '$.sender')
                  AND s.content IS json_extract(p.pdu, '$.content')) AS same
          FROM invite_room_state AS s LEFT JOIN pdus AS p ON p.sha256 = s.pdu_sha256
          WHERE s.event_id = invites.event_id ORDER BY s.position) AS s)
WHERE EXISTS (SELECT 1 FROM invite_room_state AS s WHERE s.event_id = invites.event_id);
DROP VIEW pending_invites;
DROP VIEW pending_invites_readable;
DROP TABLE invite_room_state;
DROP TABLE pdus;
ALTER TABLE pdus_new RENAME TO pdus;
-- The room state that came with each invite, one row per entry, in the order received: its
-- stripped form, and the full PDU's id and hash when it came as one.
CREATE VIEW invite_room_state AS
SELECT i.event_id, e.key AS position,
       -- An element that is a number has no members: these are NULL for it.
       coalesce(json_extract(e.value, '$.type'), json_extract(p.pdu, '$.type')) AS type,
       coalesce(json_extract(e.value, '$.state_key'),
                json_extract(p.pdu, '$.state_key')) AS state_key,
       coalesce(json_extract(e.value, '$.sender'), json_extract(p.pdu, '$.sender')) AS sender,
       coalesce(json_extract(e.value, '$.content'),
                json_extract(p.pdu, '$.content')) AS content,
       p.sha256 AS pdu_sha256,
       p.id AS pdu_id
FROM invites AS i, json_each(i.room_state) AS e
LEFT JOIN pdus AS p ON p.id = CASE e.type WHEN 'integer' THEN e.value
                                          ELSE json_extract(e.value, '$.pdu') END;
CREATE VIEW pending_invites AS
SELECT
    i.event_id, i.room_id, i.room_version, i.invitee, i.sender, i.origin,
    i.origin_server_ts, i.received_ts,
    (SELECT json_group_array(json(
                CASE WHEN s.type = 'm.room.create' AND s.state_key = '' AND s.pdu IS NOT NULL
                          AND i.create_event_as_pdu = 1
                     THEN s.pdu
                     ELSE json_object('type', s.type, 'state_key', s.state_key,
                                      'sender', s.sender, 'content', json(s.content))
                END))
       FROM (SELECT s2.*, p.pdu FROM invite_room_state s2
             LEFT JOIN pdus AS p ON p.id = s2.pdu_id
             WHERE s2.event_id = i.event_id ORDER BY s2.position) AS s) AS invite_state,
    i.signed_event
FROM invites AS i
WHERE i.state = 'pending';
CREATE VIEW pending_invites_readable AS
SELECT i.invitee, i.sender AS inviter, i.origin,
       (SELECT json_extract(s.content, '$.name') FROM invite_room_state s
         WHERE s.event_id = i.event_id AND s.type = 'm.room.name' AND s.state_key = ''
         LIMIT 1) AS room_name,
       i.room_id,
       CAST((strftime('%s', 'now') * 1000 - i.received_ts) / 60000 AS INTEGER) AS age_minutes,
       i.event_id
FROM invites AS i
WHERE i.state = 'pending'
ORDER BY i.received_ts DESC;

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

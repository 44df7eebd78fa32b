//! Invites and what came with them (`invites`, `invite_room_state`, `pdus`, `invite_warnings`).

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use invited_matrix::invite::Api;

use super::{Context, Store, StoreError, text_enum};

text_enum! {
    /// Where an invite is in its life (`invites.state`).
    pub enum InviteState {
        /// Answered 200, waiting for the user.
        Pending = "pending",
        /// Answered 200, hidden from the user by policy.
        Ignored = "ignored",
        /// The host joined the room.
        Accepted = "accepted",
        /// The user said no; the rejection is being delivered over federation.
        Rejecting = "rejecting",
        /// A server of the room accepted our leave event; or (written by a host directly)
        /// rejected here with nothing sent.
        Rejected = "rejected",
        /// Rejected, but nobody in the room was told (delivery gave up, or `--local-only`).
        RejectedLocally = "rejected_locally",
        /// The inviter withdrew the invite.
        Rescinded = "rescinded",
    }
}

/// An invite as stored after we answered it (what a retry needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInvite {
    pub event_id: String,
    pub origin: String,
    pub event_fingerprint: String,
    /// The co-signed event as answered (canonical JSON); the answer's body is built around
    /// it by `invited_matrix::invite::response_body`, for whichever endpoint asks.
    pub signed_event: String,
}

/// One `invite_room_state` entry to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomStateRow {
    pub event_type: String,
    pub state_key: String,
    pub sender: String,
    /// JSON text.
    pub content: String,
    /// Canonical JSON of the full PDU, when the entry was one. Then the four fields above
    /// must be the PDU's own (content as canonical JSON): only the PDU is stored, and the
    /// `invite_room_state` view reads them back from it.
    pub pdu: Option<String>,
}

/// A new invite to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInvite {
    pub event_id: String,
    pub room_id: String,
    pub room_version: String,
    pub invitee: String,
    pub sender: String,
    pub origin: String,
    pub origin_server_ts: i64,
    pub received_ts: i64,
    /// The endpoint it came through (`invites.api_version`).
    pub api: Api,
    /// Whether clients get the room's create event as the full PDU (the room-version
    /// table's `create_event_full_pdu_for_clients`; the `pending_invites` view reads it).
    pub create_event_as_pdu: bool,
    pub event_fingerprint: String,
    pub signed_event: String,
    /// `Pending`, or `Ignored` when policy said so.
    pub state: InviteState,
    pub room_state: Vec<RoomStateRow>,
    pub warnings: Vec<String>,
}

/// An invite for listing (`invites list`/`show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteSummary {
    pub event_id: String,
    pub room_id: String,
    pub room_version: String,
    pub invitee: String,
    pub sender: String,
    pub origin: String,
    pub origin_server_ts: i64,
    pub received_ts: i64,
    pub state: InviteState,
    pub room_name: Option<String>,
}

/// Everything stored about one invite (`invites show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteDetails {
    pub summary: InviteSummary,
    /// The co-signed event as answered (canonical JSON).
    pub signed_event: String,
    pub room_state: Vec<RoomStateRow>,
    pub warnings: Vec<String>,
}

impl Store {
    /// The stored invite with this event ID, if any.
    pub fn find_invite(&self, event_id: &str) -> Result<Option<StoredInvite>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT event_id, origin, event_fingerprint, signed_event
                 FROM invites WHERE event_id = ?1",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![event_id], |r| {
                    Ok(StoredInvite {
                        event_id: r.get(0)?,
                        origin: r.get(1)?,
                        event_fingerprint: r.get(2)?,
                        signed_event: r.get(3)?,
                    })
                })
                .optional()
            })
            .context(|| format!("cannot look up invite {event_id}"))
    }

    /// Stores an invite with its room state and warnings, in one durable transaction. If an
    /// invite with the same event ID is already stored (a concurrent duplicate won the race),
    /// nothing is written and the stored one is returned instead.
    pub fn insert_invite(&mut self, invite: &NewInvite) -> Result<StoredInvite, StoreError> {
        self.insert_invites(std::slice::from_ref(invite))
            .pop()
            .unwrap_or_else(|| {
                Err(StoreError {
                    context: "no result for the stored invite".to_owned(),
                    source: None,
                })
            })
    }

    /// Group commit: stores several invites in ONE transaction (one fsync), each inside its
    /// own savepoint so one failure does not undo the others. Results are in input order.
    pub fn insert_invites(
        &mut self,
        invites: &[NewInvite],
    ) -> Vec<Result<StoredInvite, StoreError>> {
        let fail_all = |e: StoreError| {
            invites
                .iter()
                .map(|_| {
                    Err(StoreError {
                        context: e.context.clone(),
                        source: None,
                    })
                })
                .collect()
        };
        // Fast path: the whole batch in one transaction. Any error rolls it back and the batch
        // is redone invite by invite, each in its own savepoint, so one bad invite cannot
        // take the others down with it.
        let fast = (|| {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .context(|| "cannot start a transaction".to_owned())?;
            let mut inserted = Vec::with_capacity(invites.len());
            for invite in invites {
                inserted.push(insert_invite_rows(&tx, invite, &mut self.recent_pdus)?);
            }
            tx.commit().context(|| "cannot commit invites".to_owned())?;
            Ok::<_, StoreError>(inserted)
        })();
        let results: Vec<Result<bool, StoreError>> = match fast {
            Ok(inserted) => inserted.into_iter().map(Ok).collect(),
            Err(e) => {
                log::warn!(
                    "batch of {} invites failed ({e}); storing one by one",
                    invites.len()
                );
                let mut tx = match self
                    .conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .context(|| "cannot start a transaction".to_owned())
                {
                    Ok(tx) => tx,
                    Err(e) => return fail_all(e),
                };
                let mut results = Vec::with_capacity(invites.len());
                for invite in invites {
                    let outcome = tx
                        .savepoint()
                        .context(|| "cannot start a savepoint".to_owned())
                        .and_then(|sp| {
                            let inserted = insert_invite_rows(&sp, invite, &mut self.recent_pdus)?;
                            sp.commit()
                                .context(|| "cannot release a savepoint".to_owned())?;
                            Ok(inserted)
                        });
                    results.push(outcome);
                }
                if let Err(e) = tx.commit().context(|| "cannot commit invites".to_owned()) {
                    return fail_all(e);
                }
                results
            }
        };
        invites
            .iter()
            .zip(results)
            .map(|(invite, r)| {
                if r? {
                    // Just written: what we wrote is what is stored.
                    return Ok(StoredInvite {
                        event_id: invite.event_id.clone(),
                        origin: invite.origin.clone(),
                        event_fingerprint: invite.event_fingerprint.clone(),
                        signed_event: invite.signed_event.clone(),
                    });
                }
                // Another request stored this event ID first: answer with that one.
                self.find_invite(&invite.event_id)?
                    .ok_or_else(|| StoreError {
                        context: format!("invite {} vanished after being stored", invite.event_id),
                        source: None,
                    })
            })
            .collect()
    }

    /// Invites, newest first, optionally for one invitee and/or in one state.
    pub fn list_invites(
        &self,
        invitee: Option<&str>,
        state: Option<InviteState>,
    ) -> Result<Vec<InviteSummary>, StoreError> {
        self.invite_summaries(None, invitee, state)
    }

    fn invite_summaries(
        &self,
        event_id: Option<&str>,
        invitee: Option<&str>,
        state: Option<InviteState>,
    ) -> Result<Vec<InviteSummary>, StoreError> {
        self.query_all(
            &summaries_sql(event_id.is_some()),
            params![event_id, invitee, state],
            "invites",
            |r| {
                Ok(InviteSummary {
                    event_id: r.get(0)?,
                    room_id: r.get(1)?,
                    room_version: r.get(2)?,
                    invitee: r.get(3)?,
                    sender: r.get(4)?,
                    origin: r.get(5)?,
                    origin_server_ts: r.get(6)?,
                    received_ts: r.get(7)?,
                    state: r.get(8)?,
                    room_name: r.get(9)?,
                })
            },
        )
    }

    /// One invite's signed event, room state (client form) and warnings.
    pub fn invite_details(&self, event_id: &str) -> Result<Option<InviteDetails>, StoreError> {
        let Some(summary) = self
            .invite_summaries(Some(event_id), None, None)?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let signed: String = self
            .conn
            .query_row(
                "SELECT signed_event FROM invites WHERE event_id = ?1",
                params![event_id],
                |r| r.get(0),
            )
            .context(|| format!("cannot read invite {event_id}"))?;
        let state = self.query_all(
            "SELECT s.type, s.state_key, s.sender, s.content, p.pdu
             FROM invite_room_state s LEFT JOIN pdus p ON p.id = s.pdu_id
             WHERE s.event_id = ?1 ORDER BY s.position",
            params![event_id],
            "an invite's room state",
            |r| {
                Ok(RoomStateRow {
                    event_type: r.get(0)?,
                    state_key: r.get(1)?,
                    sender: r.get(2)?,
                    content: r.get(3)?,
                    pdu: r.get(4)?,
                })
            },
        )?;
        let warnings = self.query_all(
            "SELECT warning FROM invite_warnings WHERE event_id = ?1",
            params![event_id],
            "an invite's warnings",
            |r| r.get(0),
        )?;
        Ok(Some(InviteDetails {
            summary,
            signed_event: signed,
            room_state: state,
            warnings,
        }))
    }
}

/// Inserts one invite's rows (invite, room state, warnings) inside the caller's transaction;
/// nothing if the event ID is already stored. Returns whether it inserted.
fn insert_invite_rows(
    conn: &Connection,
    invite: &NewInvite,
    recent: &mut RecentPdus,
) -> Result<bool, StoreError> {
    let id = invite.event_id.as_str();
    // A retry of a stored invite stores nothing, not even its room state's PDUs.
    let held = conn
        .prepare_cached("SELECT 1 FROM invites WHERE event_id = ?1")
        .and_then(|mut stmt| stmt.exists(params![id]))
        .context(|| format!("cannot store invite {id}"))?;
    if held {
        return Ok(false);
    }
    let room_state = room_state_column(conn, &invite.room_state, recent)
        .context(|| format!("cannot store the room state of {id}"))?;
    conn.prepare_cached(
        "INSERT INTO invites (event_id, room_id, room_version, invitee, sender, origin,
                 origin_server_ts, received_ts, api_version, event_fingerprint,
                 signed_event, state, create_event_as_pdu, room_state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            invite.event_id,
            invite.room_id,
            invite.room_version,
            invite.invitee,
            invite.sender,
            invite.origin,
            invite.origin_server_ts,
            invite.received_ts,
            invite.api.number(),
            invite.event_fingerprint,
            invite.signed_event,
            invite.state,
            invite.create_event_as_pdu,
            room_state
        ])
    })
    .context(|| format!("cannot store invite {id}"))?;
    let mut warn = conn
        .prepare_cached("INSERT INTO invite_warnings (event_id, warning) VALUES (?1, ?2)")
        .context(|| format!("cannot store the warnings of {id}"))?;
    for w in &invite.warnings {
        warn.execute(params![id, w])
            .context(|| format!("cannot store the warnings of {id}"))?;
    }
    Ok(true)
}

/// The query for invite summaries: one invite by its key (`?1`), or all of them, each
/// optionally of one invitee (`?2`) and state (`?3`). Two statements, because an `?1 IS NULL
/// OR` test would make SQLite scan every invite to find one.
fn summaries_sql(by_id: bool) -> String {
    let which = if by_id {
        "i.event_id = ?1"
    } else {
        "?1 IS NULL"
    };
    format!(
        "SELECT i.event_id, i.room_id, i.room_version, i.invitee, i.sender, i.origin,
                i.origin_server_ts, i.received_ts, i.state,
                (SELECT json_extract(s.content, '$.name') FROM invite_room_state s
                  WHERE s.event_id = i.event_id AND s.type = 'm.room.name'
                    AND s.state_key = '' LIMIT 1)
         FROM invites i
         WHERE {which} AND (?2 IS NULL OR i.invitee = ?2) AND (?3 IS NULL OR i.state = ?3)
         ORDER BY i.received_ts DESC, i.event_id"
    )
}

/// PDUs a connection stored or found lately, by SHA-256: how a wave of invites to one room
/// stores its room state once, without an index on `pdus.sha256` (which cost every invite
/// four index pages written at random places per commit). Bounded, and emptied when full. A
/// hit is checked against its row, since a rolled-back batch or retention may have removed it
/// (and its id been given to another PDU).
#[derive(Default)]
pub(super) struct RecentPdus(std::collections::HashMap<String, i64>);

impl RecentPdus {
    /// How many hashes are remembered (about 100 bytes each).
    const CAPACITY: usize = 4096;

    fn remember(&mut self, sha: String, id: i64) {
        if self.0.len() >= Self::CAPACITY {
            self.0.clear();
        }
        self.0.insert(sha, id);
    }
}

/// `invites.room_state` for these entries (schema.sql, migration 8): a JSON array whose
/// element is the `pdus.id` of an entry that came as a PDU (stored there once while `recent`
/// remembers it) and the stripped form of one that did not.
fn room_state_column(
    conn: &Connection,
    rows: &[RoomStateRow],
    recent: &mut RecentPdus,
) -> rusqlite::Result<String> {
    let mut still_there = conn.prepare_cached("SELECT sha256 = ?2 FROM pdus WHERE id = ?1")?;
    let mut add = conn.prepare_cached("INSERT INTO pdus (sha256, pdu) VALUES (?1, ?2)")?;
    let mut out = String::from("[");
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match &row.pdu {
            Some(pdu) => {
                let sha = invited_matrix::base64::encode(&<sha2::Sha256 as sha2::Digest>::digest(
                    pdu.as_bytes(),
                ));
                let known = match recent.0.get(&sha) {
                    Some(&id) => still_there
                        .query_row(params![id, sha], |r| r.get::<_, bool>(0))
                        .optional()?
                        .unwrap_or(false)
                        .then_some(id),
                    None => None,
                };
                let id = match known {
                    Some(id) => id,
                    None => {
                        add.execute(params![sha, pdu])?;
                        let id = conn.last_insert_rowid();
                        recent.remember(sha, id);
                        id
                    }
                };
                out.push_str(&id.to_string());
            }
            None => {
                // The fields in canonical order; content is JSON text already.
                out.push_str("{\"content\":");
                out.push_str(&row.content);
                for (key, text) in [
                    ("sender", &row.sender),
                    ("state_key", &row.state_key),
                    ("type", &row.event_type),
                ] {
                    out.push(',');
                    invited_matrix::json::write_canonical_str(&mut out, key);
                    out.push(':');
                    invited_matrix::json::write_canonical_str(&mut out, text);
                }
                out.push('}');
            }
        }
    }
    out.push(']');
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::tests::temp_store;

    /// A minimal pending v2 invite with this event ID (tests change what they need).
    pub(crate) fn sample(event_id: &str) -> NewInvite {
        NewInvite {
            event_id: event_id.into(),
            room_id: "!r:a".into(),
            room_version: "1".into(),
            invitee: "@b:us".into(),
            sender: "@a:a".into(),
            origin: "a".into(),
            origin_server_ts: 1,
            received_ts: 2,
            api: Api::V2,
            create_event_as_pdu: false,
            event_fingerprint: "fp".into(),
            signed_event: "{}".into(),
            state: InviteState::Pending,
            room_state: vec![],
            warnings: vec![],
        }
    }

    /// What the writer returns for a fresh insert (built in Rust) must equal what a retry
    /// reads back, byte for byte.
    #[test]
    fn fresh_insert_answer_matches_the_stored_row() {
        let (_dir, mut store) = temp_store();
        for api in [Api::V1, Api::V2] {
            let invite = NewInvite {
                api,
                signed_event: r#"{"a":"\u00e9\"x"}"#.into(),
                room_state: vec![RoomStateRow {
                    event_type: "m.room.create".into(),
                    state_key: String::new(),
                    sender: "@a:a".into(),
                    content: "{}".into(),
                    pdu: Some(
                        r#"{"content":{},"sender":"@a:a","state_key":"","type":"m.room.create"}"#
                            .into(),
                    ),
                }],
                warnings: vec!["w".into()],
                ..sample(&format!("$e{}", api.number()))
            };
            let fresh = store.insert_invite(&invite).unwrap();
            let stored = store.find_invite(&invite.event_id).unwrap().unwrap();
            assert_eq!(fresh, stored);
            // A second insert of the same event ID changes nothing and returns the stored one.
            let again = store.insert_invite(&invite).unwrap();
            assert_eq!(again, stored);
        }
    }

    /// An entry that came as a PDU is stored once, as the PDU; the `invite_room_state` view
    /// gives back its stripped fields byte for byte, escapes, non-ASCII text and large
    /// integers included. A stripped entry keeps its own fields.
    #[test]
    fn room_state_pdus_are_stored_once_and_read_back_exactly() {
        let (_dir, mut store) = temp_store();
        let content = r#"{"a":"\u0001\n\"\\é😀","b":-9007199254740991,"c":[1,{"x":null,"y":true}],"name":"Gärten"}"#;
        let pdu = format!(
            r#"{{"content":{content},"sender":"@a:a","state_key":"","type":"m.room.name"}}"#
        );
        let rows = vec![
            RoomStateRow {
                event_type: "m.room.name".into(),
                state_key: String::new(),
                sender: "@a:a".into(),
                content: content.into(),
                pdu: Some(pdu.clone()),
            },
            RoomStateRow {
                event_type: "m.room.join_rules".into(),
                state_key: String::new(),
                sender: "@b:b".into(),
                content: r#"{"join_rule":"invite"}"#.into(),
                pdu: None,
            },
        ];
        let invite = NewInvite {
            room_state: rows.clone(),
            ..sample("$e")
        };
        store.insert_invite(&invite).unwrap();
        let (column, pdus): (String, i64) = store
            .conn
            .query_row(
                "SELECT room_state, (SELECT count(*) FROM pdus) FROM invites",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            (column.as_str(), pdus),
            (
                r#"[1,{"content":{"join_rule":"invite"},"sender":"@b:b","state_key":"","type":"m.room.join_rules"}]"#,
                1
            )
        );
        // A second invite with the same PDU refers to the same row.
        store
            .insert_invite(&NewInvite {
                room_state: rows[..1].to_vec(),
                ..sample("$f")
            })
            .unwrap();
        let column: String = store
            .conn
            .query_row(
                "SELECT room_state FROM invites WHERE event_id = '$f'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(column, "[1]");
        let details = store.invite_details("$e").unwrap().unwrap();
        assert_eq!(details.room_state, rows);
        let name: String = store
            .conn
            .query_row(
                "SELECT room_name FROM pending_invites_readable WHERE event_id = '$e'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(name, "Gärten");
    }

    /// A PDU the writer remembers but whose row is gone (retention), or whose id now holds
    /// another PDU, is stored anew: an invite never refers to a missing or different PDU.
    #[test]
    fn a_remembered_pdu_that_is_gone_is_stored_again() {
        let (_dir, mut store) = temp_store();
        let pdu = |name: &str| RoomStateRow {
            event_type: "m.room.name".into(),
            state_key: String::new(),
            sender: "@a:a".into(),
            content: format!(r#"{{"name":"{name}"}}"#),
            pdu: Some(format!(
                r#"{{"content":{{"name":"{name}"}},"sender":"@a:a","state_key":"","type":"m.room.name"}}"#
            )),
        };
        let with = |id: &str, rows: Vec<RoomStateRow>| NewInvite {
            room_state: rows,
            ..sample(id)
        };
        let names = |store: &Store, id: &str| -> Vec<(String, Option<String>)> {
            store
                .query_all(
                    "SELECT s.content, p.pdu FROM invite_room_state s
                     LEFT JOIN pdus p ON p.id = s.pdu_id WHERE s.event_id = ?1",
                    params![id],
                    "state",
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap()
        };
        store.insert_invite(&with("$a", vec![pdu("A")])).unwrap();
        // Retention removes the invite and its PDU; the id is then given to another PDU.
        store
            .conn
            .execute_batch("DELETE FROM invites; DELETE FROM pdus;")
            .unwrap();
        store.insert_invite(&with("$b", vec![pdu("B")])).unwrap();
        store.insert_invite(&with("$c", vec![pdu("A")])).unwrap();
        assert_eq!(
            names(&store, "$c"),
            [(r#"{"name":"A"}"#.to_owned(), pdu("A").pdu)]
        );
        assert_eq!(
            names(&store, "$b"),
            [(r#"{"name":"B"}"#.to_owned(), pdu("B").pdu)]
        );
        // And a PDU still there is found, not stored twice.
        store.insert_invite(&with("$d", vec![pdu("A")])).unwrap();
        let count: i64 = store
            .conn
            .query_row("SELECT count(*) FROM pdus", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 2);
    }

    /// Showing one invite looks it up by its key, not by reading every invite.
    #[test]
    fn one_invite_is_found_by_its_key() {
        let (_dir, store) = temp_store();
        let plan: Vec<String> = store
            .query_all(
                &format!("EXPLAIN QUERY PLAN {}", summaries_sql(true)),
                params!["$e", None::<String>, None::<String>],
                "the plan",
                |r| r.get(3),
            )
            .unwrap();
        assert!(
            plan.iter()
                .any(|s| s.starts_with("SEARCH i USING INDEX sqlite_autoindex_invites_1")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|s| s.starts_with("SCAN i")), "{plan:?}");
    }

    /// A connection that does not remember a PDU stores it again; the invites that refer to
    /// either copy still read one entry each. A retry of a stored invite stores no PDU.
    #[test]
    fn pdus_stored_twice_read_once_and_retries_store_none() {
        let (dir, mut first) = temp_store();
        let row = RoomStateRow {
            event_type: "m.room.create".into(),
            state_key: String::new(),
            sender: "@a:a".into(),
            content: "{}".into(),
            pdu: Some(
                r#"{"content":{},"sender":"@a:a","state_key":"","type":"m.room.create"}"#.into(),
            ),
        };
        let invite = |id: &str| NewInvite {
            room_state: vec![row.clone()],
            ..sample(id)
        };
        first.insert_invite(&invite("$a")).unwrap();
        // As after a restart: a new connection, nothing remembered.
        let mut second = Store::open(&dir.path().join("t.db")).unwrap();
        second.insert_invite(&invite("$b")).unwrap();
        let pdus = |s: &Store| -> i64 {
            s.conn
                .query_row("SELECT count(*) FROM pdus", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(pdus(&second), 2);
        for id in ["$a", "$b"] {
            let details = second.invite_details(id).unwrap().unwrap();
            assert_eq!(details.room_state, std::slice::from_ref(&row), "{id}");
        }
        let mut third = Store::open(&dir.path().join("t.db")).unwrap();
        third.insert_invite(&invite("$a")).unwrap();
        assert_eq!(pdus(&third), 2, "a retry stored a PDU");
    }

    /// The host marks an invite `accepted` (by SQL, from another connection) while the CLI is
    /// choosing which invites to reject: the accepted invite must stay accepted. The
    /// concurrent write either waits for our transaction (and then fails its busy timeout
    /// here) or lands first and is respected; it is never overwritten.
    #[test]
    fn reject_never_overwrites_a_concurrent_accept() {
        let (dir, mut store) = temp_store();
        let invite = sample;
        store.insert_invite(&invite("$e")).unwrap();
        let host = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        host.busy_timeout(std::time::Duration::from_millis(100))
            .unwrap();
        let accepted_by_host = std::cell::Cell::new(false);
        let matches = |_: &str, _: &str| {
            let n = host.execute(
                "UPDATE invites SET state = 'accepted' WHERE event_id = '$e'",
                [],
            );
            accepted_by_host.set(n == Ok(1));
            true
        };
        let rejected = store
            .reject_invites(None, &matches, InviteState::Rejecting, None, 3)
            .unwrap();
        let state: String = host
            .query_row("SELECT state FROM invites WHERE event_id = '$e'", [], |r| {
                r.get(0)
            })
            .unwrap();
        if accepted_by_host.get() {
            assert_eq!(state, "accepted");
            assert!(rejected.is_empty(), "{rejected:?}");
        } else {
            assert_eq!(state, "rejecting");
            assert_eq!(rejected, vec!["$e".to_owned()]);
        }
    }

    /// The enum and the schema's CHECK list name the same states.
    #[test]
    fn every_state_is_allowed_by_the_schema() {
        let (_dir, mut store) = temp_store();
        let mut invite = sample("");
        for (i, state) in InviteState::ALL.iter().enumerate() {
            invite.event_id = format!("$e{i}");
            invite.state = *state;
            store.insert_invite(&invite).unwrap();
            let listed = store.list_invites(None, Some(*state)).unwrap();
            assert_eq!(listed.len(), 1, "{state}");
            assert_eq!(listed[0].state, *state);
        }
        let bad = store.conn.execute(
            "UPDATE invites SET state = 'lost' WHERE event_id = '$e0'",
            [],
        );
        assert!(
            bad.is_err(),
            "the schema refuses a state the enum does not know"
        );
    }
}

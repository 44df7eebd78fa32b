//! The rest of an invite's life in the database: the outbox (deliveries to other servers,
//! with their schedule), rejections and what their delivery did, rescinds, and the answers to
//! `/send` transactions that changed something.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Context, InviteState, Store, StoreError};

/// The outbox kind of rejections (subject: the invite's event ID).
pub const OUTBOX_REJECTION: &str = "rejection";

/// A due (or any) outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    pub id: i64,
    /// `rejection` or `push`.
    pub kind: String,
    /// For `rejection`: the invite's event ID; for `push`: `<pusher id> <event ID>`.
    pub subject: String,
    pub created_ts: i64,
    pub attempts: i64,
    pub next_attempt_ts: i64,
    pub last_error: Option<String>,
    pub finished_ts: Option<i64>,
}

/// A rejection as recorded: what was asked, and what delivery has done so far.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rejection {
    pub reason: Option<String>,
    pub requested_ts: i64,
    /// Our signed leave event (canonical JSON), its ID, and the server it is for.
    pub leave_event: Option<String>,
    pub leave_event_id: Option<String>,
    pub leave_server: Option<String>,
    /// Servers that refused for good.
    pub refused_by: Vec<String>,
    pub accepted_by: Option<String>,
}

/// What delivery needs to know of the invite being rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectionFacts {
    pub room_id: String,
    pub room_version: String,
    pub invitee: String,
    pub origin: String,
    pub state: InviteState,
    /// Servers of the senders in the invite's room state, the create event's first.
    pub room_state_servers: Vec<String>,
}

/// An invite a rescind may withdraw (pending, ignored or being rejected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldInviteRow {
    pub event_id: String,
    pub room_version: String,
    pub invitee: String,
    pub sender: String,
    pub origin_server_ts: i64,
}

const OUTBOX_COLUMNS: &str =
    "id, kind, subject, created_ts, attempts, next_attempt_ts, last_error, finished_ts";

fn outbox_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxItem> {
    Ok(OutboxItem {
        id: r.get(0)?,
        kind: r.get(1)?,
        subject: r.get(2)?,
        created_ts: r.get(3)?,
        attempts: r.get(4)?,
        next_attempt_ts: r.get(5)?,
        last_error: r.get(6)?,
        finished_ts: r.get(7)?,
    })
}

impl Store {
    /// Marks chosen pending (or ignored) invites `target` (`Rejecting`: to be delivered, which
    /// the schema's trigger queues; `RejectedLocally`: nothing is sent), with the user's
    /// reason; returns the event IDs changed. `matches(origin, sender)` chooses among them
    /// (the caller's globs: the store knows no matching rules).
    pub fn reject_invites(
        &mut self,
        event_id: Option<&str>,
        matches: &dyn Fn(&str, &str) -> bool,
        target: InviteState,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        // Choose and change in one write transaction, and change only what is still
        // pending or ignored: the host may accept an invite at any moment.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(|| "cannot start a transaction".to_owned())?;
        let candidates: Vec<(String, String, String)> = {
            let mut stmt = tx
                .prepare(
                    "SELECT event_id, origin, sender FROM invites
                     WHERE state IN ('pending', 'ignored') AND (?1 IS NULL OR event_id = ?1)",
                )
                .context(|| "cannot read invites".to_owned())?;
            let rows = stmt
                .query_map(params![event_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .context(|| "cannot read invites".to_owned())?;
            rows.collect::<Result<Vec<_>, _>>()
                .context(|| "cannot read invites".to_owned())?
        };
        let mut changed = Vec::new();
        for (id, origin, sender) in candidates {
            if !matches(&origin, &sender) {
                continue;
            }
            let n = tx
                .execute(
                    "UPDATE invites SET state = ?2, state_changed_ts = ?3
                     WHERE event_id = ?1 AND state IN ('pending', 'ignored')",
                    params![id, target, now_ms],
                )
                .context(|| format!("cannot reject {id}"))?;
            if n == 1 {
                tx.execute(
                    "INSERT INTO rejections (event_id, reason, requested_ts) VALUES (?1, ?2, ?3)
                     ON CONFLICT (event_id) DO UPDATE SET reason = excluded.reason",
                    params![id, reason, now_ms],
                )
                .context(|| format!("cannot record the rejection of {id}"))?;
                changed.push(id);
            }
        }
        tx.commit()
            .context(|| "cannot commit rejections".to_owned())?;
        Ok(changed)
    }

    /// Outbox rows not finished (for metrics).
    pub fn outbox_pending(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM outbox WHERE finished_ts IS NULL",
                [],
                |r| r.get(0),
            )
            .context(|| "cannot count the outbox".to_owned())
    }

    /// Outbox rows due by `now_ms`, soonest first, at most `limit`.
    pub fn due_outbox(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        self.query_all(
            &format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox
                 WHERE finished_ts IS NULL AND next_attempt_ts <= ?1
                 ORDER BY next_attempt_ts, id LIMIT ?2"
            ),
            params![now_ms, i64::try_from(limit).unwrap_or(i64::MAX)],
            "the outbox",
            outbox_row,
        )
    }

    /// The outbox row of `kind` about `subject`.
    pub fn outbox_item(&self, kind: &str, subject: &str) -> Result<Option<OutboxItem>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE kind = ?1 AND subject = ?2"),
                params![kind, subject],
                outbox_row,
            )
            .optional()
            .context(|| format!("cannot read the outbox row for {subject}"))
    }

    /// Records a failed attempt and when to try again.
    pub fn outbox_retry(&self, id: i64, next_ts: i64, error: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_ts = ?2, last_error = ?3
                 WHERE id = ?1",
                params![id, next_ts, error],
            )
            .map(drop)
            .context(|| format!("cannot reschedule outbox row {id}"))
    }

    /// The rejection recorded for an invite.
    pub fn rejection(&self, event_id: &str) -> Result<Option<Rejection>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT reason, requested_ts, leave_event, leave_event_id, leave_server,
                        refused_by, accepted_by
                 FROM rejections WHERE event_id = ?1",
                params![event_id],
                |r| {
                    Ok((
                        Rejection {
                            reason: r.get(0)?,
                            requested_ts: r.get(1)?,
                            leave_event: r.get(2)?,
                            leave_event_id: r.get(3)?,
                            leave_server: r.get(4)?,
                            refused_by: Vec::new(),
                            accepted_by: r.get(6)?,
                        },
                        r.get::<_, String>(5)?,
                    ))
                },
            )
            .optional()
            .context(|| format!("cannot read the rejection of {event_id}"))?;
        Ok(row.map(|(mut rejection, refused)| {
            rejection.refused_by = serde_json::from_str(&refused).unwrap_or_default();
            rejection
        }))
    }

    /// The invite facts a rejection's delivery needs.
    pub fn rejection_facts(&self, event_id: &str) -> Result<Option<RejectionFacts>, StoreError> {
        let Some((room_id, room_version, invitee, origin, state)) = self
            .conn
            .query_row(
                "SELECT room_id, room_version, invitee, origin, state FROM invites
                 WHERE event_id = ?1",
                params![event_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()
            .context(|| format!("cannot read invite {event_id}"))?
        else {
            return Ok(None);
        };
        let senders: Vec<String> = self.query_all(
            "SELECT sender FROM invite_room_state WHERE event_id = ?1
             ORDER BY (type = 'm.room.create' AND state_key = '') DESC, position",
            params![event_id],
            "an invite's room state",
            |r| r.get(0),
        )?;
        let mut room_state_servers: Vec<String> = Vec::new();
        for sender in senders {
            if let Some((_, server)) = sender.split_once(':')
                && !room_state_servers.iter().any(|s| s == server)
            {
                room_state_servers.push(server.to_owned());
            }
        }
        Ok(Some(RejectionFacts {
            room_id,
            room_version,
            invitee,
            origin,
            state,
            room_state_servers,
        }))
    }

    /// Stores our signed leave before it is first sent (a retry resends exactly it).
    pub fn save_leave(
        &self,
        event_id: &str,
        leave_event: &str,
        leave_event_id: &str,
        server: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE rejections SET leave_event = ?2, leave_event_id = ?3, leave_server = ?4
                 WHERE event_id = ?1",
                params![event_id, leave_event, leave_event_id, server],
            )
            .map(drop)
            .context(|| format!("cannot store the leave event for {event_id}"))
    }

    /// Records that `server` refused for good; a leave built on its template is dropped
    /// (it never entered the room).
    pub fn refused_by(&self, event_id: &str, server: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE rejections SET
                    refused_by = CASE WHEN EXISTS (SELECT 1 FROM json_each(refused_by)
                                                   WHERE value = ?2)
                                      THEN refused_by
                                      ELSE json_insert(refused_by, '$[#]', ?2) END,
                    leave_event = CASE WHEN leave_server = ?2 THEN NULL ELSE leave_event END,
                    leave_event_id = CASE WHEN leave_server = ?2 THEN NULL
                                          ELSE leave_event_id END,
                    leave_server = CASE WHEN leave_server = ?2 THEN NULL ELSE leave_server END
                 WHERE event_id = ?1",
                params![event_id, server],
            )
            .map(drop)
            .context(|| format!("cannot record {server}'s refusal for {event_id}"))
    }

    /// Ends a rejection's delivery: `accepted_by` is the server whose `send_leave` answered
    /// 200 (state `rejected`), `None` gives up (`rejected_locally`, `error` says why). Only an
    /// invite still `rejecting` changes (a rescind may have come first); the outbox row is
    /// finished either way. Returns whether the invite changed.
    pub fn finish_rejection(
        &mut self,
        outbox_id: i64,
        event_id: &str,
        accepted_by: Option<&str>,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let state = match accepted_by {
            Some(_) => InviteState::Rejected,
            None => InviteState::RejectedLocally,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(|| "cannot start a transaction".to_owned())?;
        let changed = tx
            .execute(
                "UPDATE invites SET state = ?2, state_changed_ts = ?3
                 WHERE event_id = ?1 AND state = 'rejecting'",
                params![event_id, state, now_ms],
            )
            .context(|| format!("cannot finish the rejection of {event_id}"))?;
        tx.execute(
            "UPDATE rejections SET accepted_by = ?2 WHERE event_id = ?1",
            params![event_id, accepted_by],
        )
        .context(|| format!("cannot finish the rejection of {event_id}"))?;
        tx.execute(
            "UPDATE outbox SET attempts = attempts + 1, finished_ts = ?2,
                    last_error = coalesce(?3, last_error)
             WHERE id = ?1",
            params![outbox_id, now_ms, error],
        )
        .context(|| format!("cannot finish outbox row {outbox_id}"))?;
        tx.commit()
            .context(|| format!("cannot finish the rejection of {event_id}"))?;
        Ok(changed == 1)
    }

    /// Finishes an outbox row after an attempt: delivered (`error` None) or refused for good.
    pub fn outbox_finish(
        &self,
        id: i64,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.end_outbox_row(id, 1, error, now_ms)
    }

    /// Finishes an outbox row with nothing left to do (its subject changed meanwhile), without
    /// counting an attempt.
    pub fn outbox_drop(&self, id: i64, why: &str, now_ms: i64) -> Result<(), StoreError> {
        self.end_outbox_row(id, 0, Some(why), now_ms)
    }

    fn end_outbox_row(
        &self,
        id: i64,
        attempts: i64,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE outbox SET attempts = attempts + ?4, finished_ts = ?2, last_error = ?3
                 WHERE id = ?1",
                params![id, now_ms, error, attempts],
            )
            .map(drop)
            .context(|| format!("cannot finish outbox row {id}"))
    }

    /// Invites in `room_id` a rescind may withdraw: pending, ignored or being rejected.
    pub fn held_invites_in_room(&self, room_id: &str) -> Result<Vec<HeldInviteRow>, StoreError> {
        self.query_all(
            "SELECT event_id, room_version, invitee, sender, origin_server_ts FROM invites
             WHERE room_id = ?1 AND state IN ('pending', 'ignored', 'rejecting')
             ORDER BY received_ts",
            params![room_id],
            "invites of a room",
            |r| {
                Ok(HeldInviteRow {
                    event_id: r.get(0)?,
                    room_version: r.get(1)?,
                    invitee: r.get(2)?,
                    sender: r.get(3)?,
                    origin_server_ts: r.get(4)?,
                })
            },
        )
    }

    /// Marks an invite rescinded by the PDU `pdu` (ID `event_id`) and stores it, if the invite
    /// is still held; a rejection being delivered stops. Returns whether it changed.
    pub fn record_rescind(
        &mut self,
        invite_event_id: &str,
        event_id: &str,
        pdu: &str,
        origin: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(|| "cannot start a transaction".to_owned())?;
        let changed = tx
            .execute(
                "UPDATE invites SET state = 'rescinded', state_changed_ts = ?2
                 WHERE event_id = ?1 AND state IN ('pending', 'ignored', 'rejecting')",
                params![invite_event_id, now_ms],
            )
            .context(|| format!("cannot rescind {invite_event_id}"))?;
        if changed == 1 {
            tx.execute(
                "INSERT OR REPLACE INTO rescinds (invite_event_id, event_id, pdu, origin,
                                                  received_ts)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![invite_event_id, event_id, pdu, origin, now_ms],
            )
            .context(|| format!("cannot store the rescind of {invite_event_id}"))?;
            tx.execute(
                "UPDATE outbox SET finished_ts = ?2, last_error = 'the inviter withdrew the invite'
                 WHERE kind = 'rejection' AND subject = ?1 AND finished_ts IS NULL",
                params![invite_event_id, now_ms],
            )
            .context(|| format!("cannot stop the rejection of {invite_event_id}"))?;
        }
        tx.commit()
            .context(|| format!("cannot rescind {invite_event_id}"))?;
        Ok(changed == 1)
    }

    /// The answer given to transaction `txn_id` of `origin`, if it changed something.
    pub fn transaction_answer(
        &self,
        origin: &str,
        txn_id: &str,
    ) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT response FROM transactions WHERE origin = ?1 AND txn_id = ?2",
                params![origin, txn_id],
                |r| r.get(0),
            )
            .optional()
            .context(|| format!("cannot read transaction {txn_id}"))
    }

    /// Keeps the answer to a transaction that changed something, and forgets those older
    /// than `forget_before_ms`.
    pub fn save_transaction_answer(
        &self,
        origin: &str,
        txn_id: &str,
        response: &str,
        now_ms: i64,
        forget_before_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "DELETE FROM transactions WHERE received_ts < ?1",
                params![forget_before_ms],
            )
            .context(|| "cannot prune old transactions".to_owned())?;
        self.conn
            .execute(
                "INSERT OR IGNORE INTO transactions (origin, txn_id, received_ts, response)
                 VALUES (?1, ?2, ?3, ?4)",
                params![origin, txn_id, now_ms, response],
            )
            .map(drop)
            .context(|| format!("cannot store the answer to transaction {txn_id}"))
    }

    /// The rescind that withdrew an invite: the withdrawing event's ID and the sender server.
    pub fn rescind_of(
        &self,
        invite_event_id: &str,
    ) -> Result<Option<(String, String, i64)>, StoreError> {
        self.conn
            .query_row(
                "SELECT event_id, origin, received_ts FROM rescinds WHERE invite_event_id = ?1",
                params![invite_event_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .context(|| format!("cannot read the rescind of {invite_event_id}"))
    }
}

//! Telling people about invites: pushers (where push notifications go) and what a
//! notification says, and the change log that `invites watch` and the host read.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Context, InviteState, Store, StoreError};

/// The outbox kind of push notifications (subject: `<pusher id> <invite event ID>`).
pub const OUTBOX_PUSH: &str = "push";

/// A pusher, with the fields of the client API's `POST /pushers/set` for kind `http`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pusher {
    /// Set by the store; ignored by [`Store::set_pusher`].
    pub id: i64,
    pub user_id: String,
    pub app_id: String,
    pub pushkey: String,
    pub app_display_name: String,
    pub device_display_name: String,
    pub profile_tag: Option<String>,
    pub lang: String,
    /// The `data` object as JSON text; it holds `url` (the schema checks that).
    pub data: String,
    /// When the pushkey was set (ms).
    pub pushkey_ts: i64,
}

/// What a push notification about an invite needs to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushFacts {
    pub state: InviteState,
    pub room_id: String,
    pub invitee: String,
    pub sender: String,
    /// The co-signed event (canonical JSON), for its type and content.
    pub signed_event: String,
    /// `m.room.name` from the invite's room state, when it has a text name.
    pub room_name: Option<String>,
    /// The sender's `displayname` from their member event in the room state.
    pub sender_display_name: Option<String>,
    /// The invitee's pending invites (the notification's `counts.unread`).
    pub pending_for_invitee: i64,
}

/// One row of the change log, with the room's name when the invite is still stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteChange {
    pub cursor: i64,
    pub event_id: String,
    pub room_id: String,
    pub invitee: String,
    pub sender: String,
    /// The state after the change (text, as the host may write any state the schema allows).
    pub state: String,
    pub room_name: Option<String>,
    pub ts: i64,
}

const PUSHER_COLUMNS: &str = "id, user_id, app_id, pushkey, app_display_name, device_display_name,
     profile_tag, lang, data, pushkey_ts";

fn pusher_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Pusher> {
    Ok(Pusher {
        id: r.get(0)?,
        user_id: r.get(1)?,
        app_id: r.get(2)?,
        pushkey: r.get(3)?,
        app_display_name: r.get(4)?,
        device_display_name: r.get(5)?,
        profile_tag: r.get(6)?,
        lang: r.get(7)?,
        data: r.get(8)?,
        pushkey_ts: r.get(9)?,
    })
}

/// A text field of a room-state entry's content, or NULL (`?1` the invite, `?2` the type,
/// `?3` the state key, `?4` the JSON path).
const ROOM_STATE_TEXT: &str = "SELECT CASE WHEN json_type(content, ?4) = 'text'
                                           THEN json_extract(content, ?4) END
     FROM invite_room_state WHERE event_id = ?1 AND type = ?2 AND state_key = ?3
     ORDER BY position LIMIT 1";

impl Store {
    /// Adds or replaces the pusher (`user_id`, `app_id`, `pushkey`). Unless `append`, the same
    /// app_id and pushkey is removed from every other user, as the client API does by default
    /// (<https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3pushersset>).
    /// Returns the pusher's ID.
    pub fn set_pusher(&mut self, p: &Pusher, append: bool) -> Result<i64, StoreError> {
        let fail = || format!("cannot set the pusher {} for {}", p.app_id, p.user_id);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(fail)?;
        if !append {
            tx.execute(
                "DELETE FROM pushers WHERE app_id = ?1 AND pushkey = ?2 AND user_id <> ?3",
                params![p.app_id, p.pushkey, p.user_id],
            )
            .context(fail)?;
        }
        let id = tx
            .query_row(
                "INSERT INTO pushers (user_id, app_id, pushkey, app_display_name,
                                      device_display_name, profile_tag, lang, data, pushkey_ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET
                     app_display_name = excluded.app_display_name,
                     device_display_name = excluded.device_display_name,
                     profile_tag = excluded.profile_tag, lang = excluded.lang,
                     data = excluded.data, pushkey_ts = excluded.pushkey_ts
                 RETURNING id",
                params![
                    p.user_id,
                    p.app_id,
                    p.pushkey,
                    p.app_display_name,
                    p.device_display_name,
                    p.profile_tag,
                    p.lang,
                    p.data,
                    p.pushkey_ts
                ],
                |r| r.get(0),
            )
            .context(fail)?;
        tx.commit().context(fail)?;
        Ok(id)
    }

    /// The pushers of `user_id`, or of everyone.
    pub fn pushers(&self, user_id: Option<&str>) -> Result<Vec<Pusher>, StoreError> {
        self.query_all(
            &format!(
                "SELECT {PUSHER_COLUMNS} FROM pushers WHERE ?1 IS NULL OR user_id = ?1
                 ORDER BY user_id, id"
            ),
            params![user_id],
            "pushers",
            pusher_row,
        )
    }

    /// The pusher with this ID, if it still exists.
    pub fn pusher(&self, id: i64) -> Result<Option<Pusher>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {PUSHER_COLUMNS} FROM pushers WHERE id = ?1"),
                params![id],
                pusher_row,
            )
            .optional()
            .context(|| format!("cannot read pusher {id}"))
    }

    /// Removes the pusher (`user_id`, `app_id`, `pushkey`); its queued notifications end
    /// (schema trigger). Returns whether there was one.
    pub fn remove_pusher(
        &self,
        user_id: &str,
        app_id: &str,
        pushkey: &str,
    ) -> Result<bool, StoreError> {
        self.conn
            .execute(
                "DELETE FROM pushers WHERE user_id = ?1 AND app_id = ?2 AND pushkey = ?3",
                params![user_id, app_id, pushkey],
            )
            .map(|n| n > 0)
            .context(|| format!("cannot remove the pusher {app_id} of {user_id}"))
    }

    /// What a notification about the invite `event_id` says, if the invite is still stored.
    pub fn push_facts(&self, event_id: &str) -> Result<Option<PushFacts>, StoreError> {
        let fail = || format!("cannot read the invite {event_id} for a notification");
        let row = self
            .conn
            .query_row(
                "SELECT state, room_id, invitee, sender, signed_event FROM invites
                 WHERE event_id = ?1",
                params![event_id],
                |r| {
                    Ok((
                        r.get::<_, InviteState>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                },
            )
            .optional()
            .context(fail)?;
        let Some((state, room_id, invitee, sender, signed_event)) = row else {
            return Ok(None);
        };
        let text = |kind: &str, state_key: &str, path: &str| -> Result<Option<String>, _> {
            self.conn
                .query_row(
                    ROOM_STATE_TEXT,
                    params![event_id, kind, state_key, path],
                    |r| r.get::<_, Option<String>>(0),
                )
                .optional()
                .map(Option::flatten)
                .context(fail)
        };
        let room_name = text("m.room.name", "", "$.name")?.filter(|n| !n.is_empty());
        let sender_display_name =
            text("m.room.member", &sender, "$.displayname")?.filter(|n| !n.is_empty());
        let pending_for_invitee = self
            .conn
            .query_row(
                "SELECT count(*) FROM invites WHERE invitee = ?1 AND state = 'pending'",
                params![invitee],
                |r| r.get(0),
            )
            .context(fail)?;
        Ok(Some(PushFacts {
            state,
            room_id,
            invitee,
            sender,
            signed_event,
            room_name,
            sender_display_name,
            pending_for_invitee,
        }))
    }

    /// Up to `limit` rows of the change log after `cursor`, oldest first.
    pub fn changes_after(
        &self,
        cursor: i64,
        limit: usize,
    ) -> Result<Vec<InviteChange>, StoreError> {
        self.query_all(
            "SELECT c.cursor, c.event_id, c.room_id, c.invitee, c.sender, c.state, c.ts,
                    (SELECT CASE WHEN json_type(s.content, '$.name') = 'text'
                                 THEN json_extract(s.content, '$.name') END
                       FROM invite_room_state s
                      WHERE s.event_id = c.event_id AND s.type = 'm.room.name'
                        AND s.state_key = '' ORDER BY s.position LIMIT 1)
             FROM invite_changes AS c WHERE c.cursor > ?1 ORDER BY c.cursor LIMIT ?2",
            params![cursor, i64::try_from(limit).unwrap_or(i64::MAX)],
            "the change log",
            |r| {
                Ok(InviteChange {
                    cursor: r.get(0)?,
                    event_id: r.get(1)?,
                    room_id: r.get(2)?,
                    invitee: r.get(3)?,
                    sender: r.get(4)?,
                    state: r.get(5)?,
                    ts: r.get(6)?,
                    room_name: r.get(7)?,
                })
            },
        )
    }

    /// The newest cursor ever given (0 before the first change), even if retention has
    /// deleted its row: a watcher that starts "now" starts after it.
    pub fn last_change_cursor(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row(
                "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'invite_changes'),
                                 0)",
                [],
                |r| r.get(0),
            )
            .context(|| "cannot read the change log's last cursor".to_owned())
    }

    /// `PRAGMA data_version`: changes when another connection commits, so a watcher can
    /// look at the file cheaply before asking for rows.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .context(|| "cannot read the data version".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_store;

    fn pusher(user: &str, app: &str, key: &str) -> Pusher {
        Pusher {
            id: 0,
            user_id: user.into(),
            app_id: app.into(),
            pushkey: key.into(),
            app_display_name: "App".into(),
            device_display_name: "Phone".into(),
            profile_tag: None,
            lang: "en".into(),
            data: r#"{"url":"https://push.example/_matrix/push/v1/notify"}"#.into(),
            pushkey_ts: 1,
        }
    }

    #[test]
    fn setting_the_same_pushkey_replaces_and_moves_it_between_users() {
        let (_dir, mut s) = temp_store();
        let a = s.set_pusher(&pusher("@a:x", "app", "k"), false).unwrap();
        let mut again = pusher("@a:x", "app", "k");
        again.lang = "de".into();
        assert_eq!(s.set_pusher(&again, false).unwrap(), a, "same row, updated");
        assert_eq!(s.pushers(Some("@a:x")).unwrap()[0].lang, "de");
        s.set_pusher(&pusher("@b:x", "app", "k"), true).unwrap();
        assert_eq!(
            s.pushers(None).unwrap().len(),
            2,
            "append keeps the other user's"
        );
        s.set_pusher(&pusher("@c:x", "app", "k"), false).unwrap();
        let users: Vec<_> = s
            .pushers(None)
            .unwrap()
            .into_iter()
            .map(|p| p.user_id)
            .collect();
        assert_eq!(
            users,
            ["@c:x"],
            "without append the pushkey moves to the new user"
        );
        assert!(s.remove_pusher("@c:x", "app", "k").unwrap());
        assert!(!s.remove_pusher("@c:x", "app", "k").unwrap());
    }

    #[test]
    fn a_pusher_without_a_url_is_refused_by_the_schema() {
        let (_dir, mut s) = temp_store();
        let mut p = pusher("@a:x", "app", "k");
        p.data = r#"{"format":"event_id_only"}"#.into();
        assert!(s.set_pusher(&p, false).is_err());
    }

    fn invite(s: &Store, id: &str, invitee: &str, state: &str, received: i64) {
        s.conn
            .execute(
                "INSERT INTO invites (event_id, room_id, room_version, invitee, sender, origin,
                                      origin_server_ts, received_ts, state, api_version,
                                      event_fingerprint, signed_event, room_state)
                 VALUES (?1, '!r:x', '11', ?2, '@a:x', 'x', 1, ?3, ?4, 2, 'f', '{}',
                         '[{\"type\":\"m.room.name\",\"state_key\":\"\",\"sender\":\"@a:x\",
                            \"content\":{\"name\":\"Garden\"}}]')",
                params![id, invitee, received, state],
            )
            .unwrap();
    }

    fn push_subjects(s: &Store, open_only: bool) -> Vec<String> {
        s.query_all(
            "SELECT subject FROM outbox WHERE kind = 'push'
             AND (?1 = 0 OR finished_ts IS NULL) ORDER BY id",
            params![open_only],
            "push rows",
            |r| r.get(0),
        )
        .unwrap()
    }

    #[test]
    fn a_new_pending_invite_queues_one_notification_per_pusher_of_its_invitee() {
        let (_dir, mut s) = temp_store();
        let p1 = s.set_pusher(&pusher("@b:us", "app", "k1"), false).unwrap();
        let p2 = s.set_pusher(&pusher("@b:us", "app", "k2"), false).unwrap();
        s.set_pusher(&pusher("@c:us", "app", "k3"), false).unwrap();
        invite(&s, "$1", "@b:us", "pending", 10);
        invite(&s, "$2", "@b:us", "ignored", 11);
        assert_eq!(
            push_subjects(&s, false),
            [format!("{p1} $1"), format!("{p2} $1")]
        );
        // Removing a pusher ends its queued notifications, and only its.
        s.remove_pusher("@b:us", "app", "k1").unwrap();
        assert_eq!(push_subjects(&s, true), [format!("{p2} $1")]);
        let facts = s.push_facts("$1").unwrap().unwrap();
        assert_eq!(facts.room_name.as_deref(), Some("Garden"));
        assert_eq!(facts.pending_for_invitee, 1);
        assert_eq!(facts.sender_display_name, None);
    }

    #[test]
    fn the_change_log_has_every_new_invite_and_state_change_in_order() {
        let (_dir, s) = temp_store();
        assert_eq!(s.last_change_cursor().unwrap(), 0);
        invite(&s, "$1", "@b:us", "pending", 10);
        invite(&s, "$2", "@b:us", "ignored", 11);
        s.conn
            .execute(
                "UPDATE invites SET state = 'accepted', state_changed_ts = 20 WHERE event_id = '$1'",
                [],
            )
            .unwrap();
        // Not a change of state: no row.
        s.conn
            .execute(
                "UPDATE invites SET state = 'ignored' WHERE event_id = '$2'",
                [],
            )
            .unwrap();
        let all = s.changes_after(0, 100).unwrap();
        let seen: Vec<_> = all
            .iter()
            .map(|c| (c.cursor, c.event_id.as_str(), c.state.as_str(), c.ts))
            .collect();
        assert_eq!(
            seen,
            [
                (1, "$1", "pending", 10),
                (2, "$2", "ignored", 11),
                (3, "$1", "accepted", 20)
            ]
        );
        assert_eq!(all[0].room_name.as_deref(), Some("Garden"));
        assert_eq!(s.changes_after(2, 100).unwrap().len(), 1);
        assert_eq!(s.last_change_cursor().unwrap(), 3);
        // Cursors are never reused, even when rows are deleted.
        s.conn.execute("DELETE FROM invite_changes", []).unwrap();
        invite(&s, "$3", "@b:us", "pending", 30);
        assert_eq!(s.changes_after(0, 100).unwrap()[0].cursor, 4);
    }
}

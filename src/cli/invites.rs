//! `invited invites …`: list, show, reject and watch received invites.

use clap::Subcommand;
use std::time::{Duration, Instant};

use invited_matrix::glob::{server_glob_match, user_glob_match};
use serde::Serialize;

use super::json::{Canonical, print_json};
use super::with_existing_store;
use crate::config::Config;
use crate::fatal::Error;
use crate::store::{
    InviteDetails, InviteState, InviteSummary, OUTBOX_REJECTION, OutboxItem, Rejection,
    RoomStateRow, Store,
};
use crate::text::printable;
use crate::time::now_ms;

#[derive(Debug, Subcommand)]
pub enum InvitesCommand {
    /// List invites, newest first.
    List {
        /// Only invites for this user.
        #[arg(long)]
        user: Option<String>,
        /// Only invites in this state: pending, ignored, accepted, rejecting, rejected,
        /// rejected_locally, rescinded.
        #[arg(long)]
        state: Option<String>,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one invite: its state, and what a rejection's delivery did so far. With --json:
    /// the co-signed event, its room state and warnings, and `rejection` / `rescind`.
    Show {
        event_id: String,
        /// Print a JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Reject invites: the running server tells the room (make_leave + send_leave to the
    /// inviting server, then others of the room), retrying until it succeeds or gives up
    /// ([rejections] in the config). Without a running server the request waits in the
    /// database. Give one of EVENT_ID, --from-server or --from-user.
    Reject {
        event_id: Option<String>,
        /// Every pending or ignored invite whose origin matches this server glob.
        #[arg(long, value_name = "GLOB")]
        from_server: Option<String>,
        /// Every pending or ignored invite whose sender matches this user glob.
        #[arg(long, value_name = "GLOB")]
        from_user: Option<String>,
        /// The reason, shown to the room in our leave event.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// Reject here only: nothing is sent, the inviter keeps seeing the invite
        /// (state rejected_locally).
        #[arg(long)]
        local_only: bool,
        /// Wait up to SECS for the outcome: exit 0 when a server of the room accepted the
        /// rejection, 1 otherwise (printing the state and the last error).
        #[arg(long, value_name = "SECS")]
        wait: Option<u64>,
    },
    /// Print each new invite and each change of an invite's state as it happens (from the
    /// change log, table invite_changes), until interrupted; never writes to the database.
    Watch {
        /// One JSON object per line: cursor, event_id, invitee, room_id, room_name, sender,
        /// state, ts.
        #[arg(long)]
        json: bool,
        /// First print every change after this cursor (the last one you handled), then
        /// follow. Without it, only what happens from now on.
        #[arg(long, value_name = "CURSOR", value_parser = clap::value_parser!(i64).range(0..))]
        since: Option<i64>,
    },
}

/// One row of `invites list --json`. Fields in code-point order (see [`super::json`]).
#[derive(Serialize)]
struct ListedInvite<'a> {
    event_id: &'a str,
    invitee: &'a str,
    origin: &'a str,
    origin_server_ts: i64,
    received_ts: i64,
    room_id: &'a str,
    room_name: Option<&'a str>,
    room_version: &'a str,
    sender: &'a str,
    state: &'static str,
}

impl<'a> From<&'a InviteSummary> for ListedInvite<'a> {
    fn from(i: &'a InviteSummary) -> Self {
        ListedInvite {
            event_id: &i.event_id,
            invitee: &i.invitee,
            origin: &i.origin,
            origin_server_ts: i.origin_server_ts,
            received_ts: i.received_ts,
            room_id: &i.room_id,
            room_name: i.room_name.as_deref(),
            room_version: &i.room_version,
            sender: &i.sender,
            state: i.state.as_str(),
        }
    }
}

/// `invites show`. Fields in code-point order (see [`super::json`]).
#[derive(Serialize)]
struct ShownInvite<'a> {
    /// The co-signed event as we answered it.
    event: Canonical,
    event_id: &'a str,
    invite_room_state: Vec<ShownStateEntry<'a>>,
    invitee: &'a str,
    origin: &'a str,
    received_ts: i64,
    /// What a rejection's delivery did (absent when none was asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    rejection: Option<ShownRejection<'a>>,
    /// The event that withdrew the invite (absent unless rescinded).
    #[serde(skip_serializing_if = "Option::is_none")]
    rescind: Option<ShownRescind<'a>>,
    room_id: &'a str,
    room_version: &'a str,
    sender: &'a str,
    state: &'static str,
    warnings: &'a [String],
}

/// One `invite_room_state` entry in its client (stripped) form.
#[derive(Serialize)]
struct ShownStateEntry<'a> {
    content: Canonical,
    /// Whether the entry came as a full PDU.
    full_pdu: bool,
    sender: &'a str,
    state_key: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
}

impl<'a> ShownInvite<'a> {
    /// Fails when stored JSON does not parse (state entries are checked before the event).
    fn new(details: &'a InviteDetails) -> Result<Self, Error> {
        let invite_room_state = details
            .room_state
            .iter()
            .map(ShownStateEntry::new)
            .collect::<Result<_, Error>>()?;
        let s = &details.summary;
        Ok(ShownInvite {
            event: Canonical::parse(&details.signed_event, "stored event")?,
            event_id: &s.event_id,
            invite_room_state,
            invitee: &s.invitee,
            origin: &s.origin,
            received_ts: s.received_ts,
            rejection: None,
            rescind: None,
            room_id: &s.room_id,
            room_version: &s.room_version,
            sender: &s.sender,
            state: s.state.as_str(),
            warnings: &details.warnings,
        })
    }
}

impl<'a> ShownStateEntry<'a> {
    fn new(r: &'a RoomStateRow) -> Result<Self, Error> {
        Ok(ShownStateEntry {
            content: Canonical::parse(&r.content, "stored content")?,
            full_pdu: r.pdu.is_some(),
            sender: &r.sender,
            state_key: &r.state_key,
            event_type: &r.event_type,
        })
    }
}

pub(super) fn run(config: &Config, command: InvitesCommand) -> Result<(), Error> {
    match command {
        InvitesCommand::List { user, state, json } => with_existing_store(config, |store| {
            list(store, user.as_deref(), state.as_deref(), json)
        }),
        InvitesCommand::Show { event_id, json } => {
            with_existing_store(config, |store| show(store, &event_id, json))
        }
        InvitesCommand::Reject {
            event_id,
            from_server,
            from_user,
            reason,
            local_only,
            wait,
        } => with_existing_store(config, |store| {
            reject(
                store,
                &RejectArgs {
                    event_id: event_id.as_deref(),
                    from_server: from_server.as_deref(),
                    from_user: from_user.as_deref(),
                    reason: reason.as_deref(),
                    local_only,
                    wait: wait.map(Duration::from_secs),
                },
            )
        }),
        // Not through `with_existing_store`: opening migrates, and a watcher never writes.
        InvitesCommand::Watch { json, since } => super::watch::run(config, json, since),
    }
}

fn list(store: &Store, user: Option<&str>, state: Option<&str>, json: bool) -> Result<(), Error> {
    let state = match state {
        None => None,
        Some(s) => Some(InviteState::parse(s).ok_or_else(|| {
            let names: Vec<&str> = InviteState::ALL.iter().map(|s| s.as_str()).collect();
            Error::new(format!("--state {s}: expected one of {}", names.join(", ")))
        })?),
    };
    let invites = store.list_invites(user, state)?;
    if json {
        let items: Vec<ListedInvite> = invites.iter().map(ListedInvite::from).collect();
        print_json(&items)?;
    } else {
        println!(
            "{:<9} {:<28} {:<28} {:<20} {:<14} event_id",
            "state", "invitee", "inviter", "room", "received"
        );
        for i in &invites {
            let room = i.room_name.as_deref().unwrap_or(&i.room_id);
            println!(
                "{:<9} {:<28} {:<28} {:<20} {:<14} {}",
                i.state,
                printable(&i.invitee),
                printable(&i.sender),
                printable(room),
                i.received_ts,
                printable(&i.event_id)
            );
        }
    }
    Ok(())
}

fn show(store: &Store, event_id: &str, json: bool) -> Result<(), Error> {
    let Some(details) = store.invite_details(event_id)? else {
        return Err(Error::new(format!("no invite {event_id}")));
    };
    let lifecycle = Lifecycle::read(store, event_id)?;
    if json {
        let mut shown = ShownInvite::new(&details)?;
        shown.rejection = lifecycle.rejection.as_ref().map(ShownRejection::new);
        shown.rescind = lifecycle.rescind.as_ref().map(ShownRescind::new);
        print_json(&shown)?;
        return Ok(());
    }
    let s = &details.summary;
    println!("state:    {}", s.state);
    println!("invitee:  {}", printable(&s.invitee));
    println!("inviter:  {}", printable(&s.sender));
    println!(
        "room:     {} ({})",
        printable(s.room_name.as_deref().unwrap_or("")),
        printable(&s.room_id)
    );
    println!("received: {}", s.received_ts);
    if let Some((rejection, outbox)) = &lifecycle.rejection {
        println!(
            "rejection: {} attempt(s){}{}",
            outbox.as_ref().map_or(0, |o| o.attempts),
            rejection
                .accepted_by
                .as_deref()
                .map(|s| format!(", accepted by {}", printable(s)))
                .unwrap_or_default(),
            outbox
                .as_ref()
                .and_then(|o| o.last_error.as_deref())
                .map(|e| format!(", last error: {}", printable(e)))
                .unwrap_or_default()
        );
    }
    if let Some((id, origin, _)) = &lifecycle.rescind {
        println!(
            "rescinded by {} (sent by {})",
            printable(id),
            printable(origin)
        );
    }
    Ok(())
}

/// What happened to an invite after it was answered.
struct Lifecycle {
    rejection: Option<(Rejection, Option<OutboxItem>)>,
    rescind: Option<(String, String, i64)>,
}

impl Lifecycle {
    fn read(store: &Store, event_id: &str) -> Result<Lifecycle, Error> {
        let rejection = match store.rejection(event_id)? {
            Some(r) => Some((r, store.outbox_item(OUTBOX_REJECTION, event_id)?)),
            None => None,
        };
        Ok(Lifecycle {
            rejection,
            rescind: store.rescind_of(event_id)?,
        })
    }
}

/// `"rejection"` of `invites show --json`. Fields in code-point order.
#[derive(Serialize)]
struct ShownRejection<'a> {
    accepted_by: Option<&'a str>,
    attempts: i64,
    finished_ts: Option<i64>,
    last_error: Option<&'a str>,
    leave_event: Option<Canonical>,
    leave_event_id: Option<&'a str>,
    leave_server: Option<&'a str>,
    next_attempt_ts: Option<i64>,
    reason: Option<&'a str>,
    refused_by: &'a [String],
    requested_ts: i64,
}

impl<'a> ShownRejection<'a> {
    fn new((r, outbox): &'a (Rejection, Option<OutboxItem>)) -> Self {
        ShownRejection {
            accepted_by: r.accepted_by.as_deref(),
            attempts: outbox.as_ref().map_or(0, |o| o.attempts),
            finished_ts: outbox.as_ref().and_then(|o| o.finished_ts),
            last_error: outbox.as_ref().and_then(|o| o.last_error.as_deref()),
            leave_event: r
                .leave_event
                .as_deref()
                .and_then(|e| Canonical::parse(e, "stored leave event").ok()),
            leave_event_id: r.leave_event_id.as_deref(),
            leave_server: r.leave_server.as_deref(),
            next_attempt_ts: outbox
                .as_ref()
                .filter(|o| o.finished_ts.is_none())
                .map(|o| o.next_attempt_ts),
            reason: r.reason.as_deref(),
            refused_by: &r.refused_by,
            requested_ts: r.requested_ts,
        }
    }
}

/// `"rescind"` of `invites show --json`.
#[derive(Serialize)]
struct ShownRescind<'a> {
    event_id: &'a str,
    origin: &'a str,
    received_ts: i64,
}

impl<'a> ShownRescind<'a> {
    fn new((event_id, origin, received_ts): &'a (String, String, i64)) -> Self {
        ShownRescind {
            event_id,
            origin,
            received_ts: *received_ts,
        }
    }
}

/// `invites reject`'s arguments.
struct RejectArgs<'a> {
    event_id: Option<&'a str>,
    from_server: Option<&'a str>,
    from_user: Option<&'a str>,
    reason: Option<&'a str>,
    local_only: bool,
    wait: Option<Duration>,
}

/// Asks for the rejection of matching pending or ignored invites (the server delivers it).
fn reject(store: &mut Store, args: &RejectArgs<'_>) -> Result<(), Error> {
    let given = [
        args.event_id.is_some(),
        args.from_server.is_some(),
        args.from_user.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(Error::new(
            "give exactly one of EVENT_ID, --from-server GLOB, --from-user GLOB",
        ));
    }
    let matches = |origin: &str, sender: &str| {
        args.from_server
            .is_none_or(|g| server_glob_match(g, origin))
            && args.from_user.is_none_or(|g| user_glob_match(g, sender))
    };
    let target = if args.local_only {
        InviteState::RejectedLocally
    } else {
        InviteState::Rejecting
    };
    let changed = store.reject_invites(args.event_id, &matches, target, args.reason, now_ms())?;
    if let (Some(id), true) = (args.event_id, changed.is_empty()) {
        return Err(Error::new(format!("no pending or ignored invite {id}")));
    }
    for id in &changed {
        println!("{target} {}", printable(id));
    }
    println!("{} invite(s) rejected", changed.len());
    if let Some(wait) = args.wait {
        return wait_for_outcome(store, &changed, wait);
    }
    Ok(())
}

/// Waits until every invite in `ids` has left `rejecting`, or `wait` passes; succeeds only
/// when each was accepted by a server of its room.
fn wait_for_outcome(store: &Store, ids: &[String], wait: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + wait;
    let mut failed = Vec::new();
    for id in ids {
        let state = loop {
            let state = store.invite_details(id)?.map(|d| d.summary.state);
            if state != Some(InviteState::Rejecting) || Instant::now() >= deadline {
                break state;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        if state != Some(InviteState::Rejected) {
            let last_error = store
                .outbox_item(OUTBOX_REJECTION, id)?
                .and_then(|o| o.last_error)
                .unwrap_or_else(|| "none".to_owned());
            failed.push(format!(
                "{}: {} (last error: {})",
                printable(id),
                state.map_or("gone", InviteState::as_str),
                printable(&last_error)
            ));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "not rejected over federation: {}",
            failed.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::super::json::tests::assert_canonical;
    use super::*;

    fn summary(room_name: Option<&str>) -> InviteSummary {
        InviteSummary {
            event_id: "$e".into(),
            room_id: "!r:remote.test".into(),
            room_version: "5".into(),
            invitee: "@bob:example.test".into(),
            sender: "@alice:remote.test".into(),
            origin: "remote.test".into(),
            origin_server_ts: 1,
            received_ts: 2,
            state: InviteState::Ignored,
            room_name: room_name.map(str::to_owned),
        }
    }

    #[test]
    fn list_json_is_what_it_always_was() {
        let rows = [summary(Some("Room")), summary(None)];
        let items: Vec<ListedInvite> = rows.iter().map(ListedInvite::from).collect();
        let row = r#""event_id":"$e","invitee":"@bob:example.test","origin":"remote.test","origin_server_ts":1,"received_ts":2,"room_id":"!r:remote.test""#;
        let rest = r#""room_version":"5","sender":"@alice:remote.test","state":"ignored""#;
        assert_eq!(
            assert_canonical(&items),
            format!(r#"[{{{row},"room_name":"Room",{rest}}},{{{row},"room_name":null,{rest}}}]"#)
        );
    }

    #[test]
    fn show_json_is_what_it_always_was() {
        let details = InviteDetails {
            summary: summary(None),
            signed_event: r#"{"type":"m.room.member","content":{"f":1.0E20}}"#.into(),
            room_state: vec![RoomStateRow {
                event_type: "m.room.name".into(),
                state_key: "".into(),
                sender: "@alice:remote.test".into(),
                content: r#"{"name":"Room"}"#.into(),
                pdu: Some("{}".into()),
            }],
            warnings: vec!["w1".into()],
        };
        assert_eq!(
            assert_canonical(&ShownInvite::new(&details).unwrap()),
            concat!(
                r#"{"event":{"content":{"f":1e+20},"type":"m.room.member"},"event_id":"$e","#,
                r#""invite_room_state":[{"content":{"name":"Room"},"full_pdu":true,"#,
                r#""sender":"@alice:remote.test","state_key":"","type":"m.room.name"}],"#,
                r#""invitee":"@bob:example.test","origin":"remote.test","received_ts":2,"#,
                r#""room_id":"!r:remote.test","room_version":"5","sender":"@alice:remote.test","#,
                r#""state":"ignored","warnings":["w1"]}"#
            )
        );
    }

    #[test]
    fn show_reports_bad_stored_content_before_a_bad_event() {
        let details = InviteDetails {
            summary: summary(None),
            signed_event: "{".into(),
            room_state: vec![RoomStateRow {
                event_type: "m.room.name".into(),
                state_key: "".into(),
                sender: "@alice:remote.test".into(),
                content: "[".into(),
                pdu: None,
            }],
            warnings: vec![],
        };
        let err = ShownInvite::new(&details).err().unwrap();
        assert!(err.0.starts_with("stored content: "), "{err}");
    }
}

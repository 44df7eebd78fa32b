//! `invited invites …`: list, show and reject received invites.

use clap::Subcommand;
use invited_matrix::glob::server_glob_match;
use serde::Serialize;

use super::json::{Canonical, print_json};
use super::with_existing_store;
use crate::config::Config;
use crate::fatal::Error;
use crate::store::{InviteDetails, InviteState, InviteSummary, RoomStateRow, Store};
use crate::text::printable;
use crate::time::now_ms;

#[derive(Debug, Subcommand)]
pub enum InvitesCommand {
    /// List invites, newest first.
    List {
        /// Only invites for this user.
        #[arg(long)]
        user: Option<String>,
        /// Only invites in this state: pending, accepted, rejected, ignored.
        #[arg(long)]
        state: Option<String>,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one invite as JSON: the co-signed event, its room state and warnings.
    Show { event_id: String },
    /// Mark invites as rejected in this server's database. This does NOT tell the inviting
    /// server or the room: no leave event is sent (invited has no client side); the invite
    /// only leaves the pending list. Give one of EVENT_ID, --from-server or --from-user.
    Reject {
        event_id: Option<String>,
        /// Every pending or ignored invite whose origin matches this server glob.
        #[arg(long, value_name = "GLOB")]
        from_server: Option<String>,
        /// Every pending or ignored invite sent by this user.
        #[arg(long, value_name = "USER")]
        from_user: Option<String>,
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
    with_existing_store(config, |store| match command {
        InvitesCommand::List { user, state, json } => {
            list(store, user.as_deref(), state.as_deref(), json)
        }
        InvitesCommand::Show { event_id } => show(store, &event_id),
        InvitesCommand::Reject {
            event_id,
            from_server,
            from_user,
        } => reject(
            store,
            event_id.as_deref(),
            from_server.as_deref(),
            from_user.as_deref(),
        ),
    })
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

fn show(store: &Store, event_id: &str) -> Result<(), Error> {
    let Some(details) = store.invite_details(event_id)? else {
        return Err(Error::new(format!("no invite {event_id}")));
    };
    print_json(&ShownInvite::new(&details)?)?;
    Ok(())
}

/// Marks matching pending or ignored invites rejected (locally only: nothing is sent).
fn reject(
    store: &mut Store,
    event_id: Option<&str>,
    from_server: Option<&str>,
    from_user: Option<&str>,
) -> Result<(), Error> {
    let given = [
        event_id.is_some(),
        from_server.is_some(),
        from_user.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(Error::new(
            "give exactly one of EVENT_ID, --from-server GLOB, --from-user USER",
        ));
    }
    let matches = |origin: &str, sender: &str| {
        from_server.is_none_or(|g| server_glob_match(g, origin))
            && from_user.is_none_or(|u| u == sender)
    };
    let changed = store.reject_invites(event_id, &matches, now_ms())?;
    if let (Some(id), true) = (event_id, changed.is_empty()) {
        return Err(Error::new(format!("no pending or ignored invite {id}")));
    }
    for id in &changed {
        println!("rejected {id}");
    }
    println!("{} invite(s) rejected", changed.len());
    Ok(())
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

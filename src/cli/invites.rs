//! `invited invites …`: list, show and reject received invites.

use clap::Subcommand;
use invited_matrix::Value;

use super::{obj, open_existing_store, opt, parse_json_arg};
use crate::config::Config;
use crate::fatal::Error;
use crate::store::InviteState;
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

pub(super) fn run(config: &Config, command: InvitesCommand) -> Result<(), Error> {
    let mut store = open_existing_store(config)?;
    match command {
        InvitesCommand::List { user, state, json } => {
            let state = match state.as_deref() {
                None => None,
                Some(s) => Some(InviteState::parse(s).ok_or_else(|| {
                    let names: Vec<&str> = InviteState::ALL.iter().map(|s| s.as_str()).collect();
                    Error::new(format!("--state {s}: expected one of {}", names.join(", ")))
                })?),
            };
            let invites = store.list_invites(user.as_deref(), state)?;
            if json {
                let items = invites
                    .iter()
                    .map(|i| {
                        obj(vec![
                            ("event_id", i.event_id.clone().into()),
                            ("room_id", i.room_id.clone().into()),
                            ("room_version", i.room_version.clone().into()),
                            ("room_name", opt(&i.room_name)),
                            ("invitee", i.invitee.clone().into()),
                            ("sender", i.sender.clone().into()),
                            ("origin", i.origin.clone().into()),
                            ("origin_server_ts", Value::int(i.origin_server_ts)),
                            ("received_ts", Value::int(i.received_ts)),
                            ("state", i.state.as_str().into()),
                        ])
                    })
                    .collect();
                println!("{}", Value::Array(items));
            } else {
                println!(
                    "{:<9} {:<28} {:<28} {:<20} {:<14} event_id",
                    "state", "invitee", "inviter", "room", "received"
                );
                for i in &invites {
                    println!(
                        "{:<9} {:<28} {:<28} {:<20} {:<14} {}",
                        i.state,
                        i.invitee,
                        i.sender,
                        i.room_name.clone().unwrap_or_else(|| i.room_id.clone()),
                        i.received_ts,
                        i.event_id
                    );
                }
            }
        }
        InvitesCommand::Show { event_id } => {
            let Some(details) = store.invite_details(&event_id)? else {
                return Err(Error::new(format!("no invite {event_id}")));
            };
            let summary = details.summary;
            let signed = details.signed_event;
            let warnings = details.warnings;
            let state = details
                .room_state
                .iter()
                .map(|r| {
                    Ok(obj(vec![
                        ("type", r.event_type.clone().into()),
                        ("state_key", r.state_key.clone().into()),
                        ("sender", r.sender.clone().into()),
                        ("content", parse_json_arg(&r.content, "stored content")?),
                        ("full_pdu", Value::Bool(r.pdu.is_some())),
                    ]))
                })
                .collect::<Result<Vec<_>, Error>>()?;
            let out = obj(vec![
                ("event_id", summary.event_id.into()),
                ("room_id", summary.room_id.into()),
                ("room_version", summary.room_version.into()),
                ("invitee", summary.invitee.into()),
                ("sender", summary.sender.into()),
                ("origin", summary.origin.into()),
                ("state", summary.state.as_str().into()),
                ("received_ts", Value::int(summary.received_ts)),
                ("event", parse_json_arg(&signed, "stored event")?),
                ("invite_room_state", Value::Array(state)),
                (
                    "warnings",
                    Value::Array(warnings.into_iter().map(Value::from).collect()),
                ),
            ]);
            println!("{out}");
        }
        InvitesCommand::Reject {
            event_id,
            from_server,
            from_user,
        } => {
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
            let server_glob = from_server.as_deref().map(str::to_ascii_lowercase);
            let matches = |origin: &str, sender: &str| {
                server_glob
                    .as_deref()
                    .is_none_or(|g| crate::policy::glob_match(g, &crate::policy::host(origin)))
                    && from_user.as_deref().is_none_or(|u| u == sender)
            };
            let changed = store.reject_invites(event_id.as_deref(), &matches, now_ms())?;
            if let (Some(id), true) = (&event_id, changed.is_empty()) {
                return Err(Error::new(format!("no pending or ignored invite {id}")));
            }
            for id in &changed {
                println!("rejected {id}");
            }
            println!("{} invite(s) rejected", changed.len());
        }
    }
    store.close()?;
    Ok(())
}

//! `invited users …`: local users, their invite settings and their pushers.

use clap::Subcommand;
use invited_matrix::push::check_pusher_data;
use invited_matrix::{Object, Value};
use serde::Serialize;

use super::json::{Canonical, print_json};
use super::{parse_json_arg, with_existing_store};
use crate::config::Config;
use crate::fatal::Error;
use crate::store::{Pusher, Store, UserSetting};
use crate::text::printable;
use crate::time::now_ms;

/// The client API's limits on a pusher's app_id and pushkey
/// (<https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3pushersset>).
const MAX_APP_ID_CHARS: usize = 64;
const MAX_PUSHKEY_BYTES: usize = 512;

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add local users (what known-users-only mode accepts invites for).
    Add { user_ids: Vec<String> },
    /// Set a user's invite setting to the JSON a client would set as account data:
    /// invite-permission-config (m.invite_permission_config), msc4155
    /// (org.matrix.msc4155.invite_permission_config) or ignored-users (m.ignored_user_list).
    /// 'null' clears it.
    SetConfig {
        user_id: String,
        #[arg(value_parser = ["invite-permission-config", "msc4155", "ignored-users"])]
        setting: String,
        json: String,
    },
    /// Add or replace a push gateway pusher for a user, with the fields a client gives
    /// POST /_matrix/client/v3/pushers/set (kind "http"): the same app ID and pushkey again
    /// replaces it, and (unless --append) takes it from any other user. New pending invites
    /// for the user are then pushed to the gateway at --url.
    SetPusher {
        user_id: String,
        #[arg(long)]
        app_id: String,
        #[arg(long)]
        pushkey: String,
        /// The gateway's notify URL, e.g. https://push.example.org/_matrix/push/v1/notify.
        #[arg(long)]
        url: String,
        /// "event_id_only": send only the event and room IDs and the count.
        #[arg(long, value_parser = ["event_id_only"])]
        format: Option<String>,
        /// Other fields of the pusher's data, as a JSON object (forwarded to the gateway).
        #[arg(long)]
        data: Option<String>,
        /// Shown to the user; defaults to the app ID.
        #[arg(long)]
        app_display_name: Option<String>,
        /// Shown to the user; defaults to "invited".
        #[arg(long)]
        device_display_name: Option<String>,
        #[arg(long, default_value = "en")]
        lang: String,
        #[arg(long)]
        profile_tag: Option<String>,
        /// Keep the same app ID and pushkey of other users (the client API's "append").
        #[arg(long)]
        append: bool,
    },
    /// List a user's pushers (every user's without USER_ID).
    Pushers {
        user_id: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a pusher; its queued notifications are not sent.
    RemovePusher {
        user_id: String,
        #[arg(long)]
        app_id: String,
        #[arg(long)]
        pushkey: String,
    },
}

/// A pusher as `users pushers --json` prints it: the client API's `GET /pushers` fields,
/// plus `id` and `pushkey_ts` (ms). Fields in code-point order (see `cli::json`).
#[derive(Serialize)]
struct ShownPusher<'a> {
    app_display_name: &'a str,
    app_id: &'a str,
    data: Canonical,
    device_display_name: &'a str,
    id: i64,
    kind: &'static str,
    lang: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    profile_tag: Option<&'a str>,
    pushkey: &'a str,
    pushkey_ts: i64,
    user_id: &'a str,
}

/// Checks that `user_id` is one of ours.
fn local_user(config: &Config, user_id: &str) -> Result<(), Error> {
    let id = invited_matrix::UserId::parse(user_id).map_err(|e| Error::new(e.to_string()))?;
    if id.server_str() != config.server_name.as_str() {
        return Err(Error::new(format!(
            "{user_id} is not a user of {}",
            config.server_name
        )));
    }
    Ok(())
}

pub(super) fn run(config: &Config, command: UsersCommand) -> Result<(), Error> {
    with_existing_store(config, |store| match command {
        UsersCommand::Add { user_ids } => {
            for u in &user_ids {
                local_user(config, u)?;
                store.add_local_user(u)?;
                println!("added {u}");
            }
            Ok(())
        }
        UsersCommand::SetConfig {
            user_id,
            setting,
            json,
        } => {
            let column = match setting.as_str() {
                "invite-permission-config" => UserSetting::InvitePermissionConfig,
                "msc4155" => UserSetting::Msc4155Config,
                _ => UserSetting::IgnoredUserList,
            };
            let value = parse_json_arg(&json, "the setting")?;
            let text = match &value {
                Value::Null => None,
                Value::Object(_) => Some(value.to_canonical_string()),
                _ => return Err(Error::new("the setting must be a JSON object or null")),
            };
            store.set_user_setting(&user_id, column, text.as_deref())?;
            println!("set {setting} of {user_id}");
            Ok(())
        }
        UsersCommand::SetPusher {
            user_id,
            app_id,
            pushkey,
            url,
            format,
            data,
            app_display_name,
            device_display_name,
            lang,
            profile_tag,
            append,
        } => {
            local_user(config, &user_id)?;
            if app_id.is_empty() || app_id.chars().count() > MAX_APP_ID_CHARS {
                return Err(Error::new(format!(
                    "--app-id must be 1 to {MAX_APP_ID_CHARS} characters"
                )));
            }
            if pushkey.is_empty() || pushkey.len() > MAX_PUSHKEY_BYTES {
                return Err(Error::new(format!(
                    "--pushkey must be 1 to {MAX_PUSHKEY_BYTES} bytes"
                )));
            }
            let mut fields = match data {
                None => Object::new(),
                Some(text) => match parse_json_arg(&text, "--data")? {
                    Value::Object(o) => o,
                    _ => return Err(Error::new("--data must be a JSON object")),
                },
            };
            fields.insert("url".into(), url.as_str().into());
            if let Some(f) = format {
                fields.insert("format".into(), f.into());
            }
            let data = Value::Object(fields);
            check_pusher_data(&data).map_err(|e| Error::new(format!("--url/--data: {e}")))?;
            if url.starts_with("http://") && !config.push.allow_http {
                eprintln!(
                    "warning: {url} is plain http and push.allow_http is off: notifications \
                     to it will fail until it is turned on"
                );
            }
            let pusher = Pusher {
                id: 0,
                user_id,
                app_display_name: app_display_name.unwrap_or_else(|| app_id.clone()),
                app_id,
                pushkey,
                device_display_name: device_display_name.unwrap_or_else(|| "invited".into()),
                profile_tag,
                lang,
                data: data.to_canonical_string(),
                pushkey_ts: now_ms(),
            };
            let id = store.set_pusher(&pusher, append)?;
            println!(
                "pusher {id} of {}: {} → {}",
                pusher.user_id,
                printable(&pusher.app_id),
                printable(&url)
            );
            Ok(())
        }
        UsersCommand::Pushers { user_id, json } => list_pushers(store, user_id.as_deref(), json),
        UsersCommand::RemovePusher {
            user_id,
            app_id,
            pushkey,
        } => {
            if store.remove_pusher(&user_id, &app_id, &pushkey)? {
                println!("removed the pusher {} of {user_id}", printable(&app_id));
                Ok(())
            } else {
                Err(Error::new(format!(
                    "{user_id} has no pusher with app ID {} and that pushkey",
                    printable(&app_id)
                )))
            }
        }
    })
}

fn list_pushers(store: &Store, user_id: Option<&str>, json: bool) -> Result<(), Error> {
    let pushers = store.pushers(user_id)?;
    if json {
        let shown = pushers
            .iter()
            .map(|p| {
                Ok(ShownPusher {
                    app_display_name: &p.app_display_name,
                    app_id: &p.app_id,
                    data: Canonical::parse(&p.data, "stored pusher data")?,
                    device_display_name: &p.device_display_name,
                    id: p.id,
                    kind: "http",
                    lang: &p.lang,
                    profile_tag: p.profile_tag.as_deref(),
                    pushkey: &p.pushkey,
                    pushkey_ts: p.pushkey_ts,
                    user_id: &p.user_id,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        return print_json(&shown);
    }
    if pushers.is_empty() {
        println!("no pushers");
    }
    for p in &pushers {
        let data = invited_matrix::json::parse(&p.data).ok();
        let field = |f: &str| {
            data.as_ref()
                .and_then(|d| d.get(f))
                .and_then(Value::as_str)
                .map(|s| printable(s).into_owned())
        };
        println!(
            "{}  {}  {}  {}{}  ({}, {})",
            p.id,
            printable(&p.user_id),
            printable(&p.app_id),
            field("url").unwrap_or_default(),
            field("format")
                .map(|f| format!("  format={f}"))
                .unwrap_or_default(),
            printable(&p.app_display_name),
            printable(&p.device_display_name),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::json::tests::assert_canonical;

    #[test]
    fn pushers_print_as_canonical_json() {
        assert_canonical(&ShownPusher {
            app_display_name: "App",
            app_id: "org.example",
            data: Canonical::parse(r#"{"url":"https://gw/_matrix/push/v1/notify"}"#, "d").unwrap(),
            device_display_name: "Phone",
            id: 3,
            kind: "http",
            lang: "en",
            profile_tag: Some("t"),
            pushkey: "pk",
            pushkey_ts: 5,
            user_id: "@bob:us",
        });
    }
}

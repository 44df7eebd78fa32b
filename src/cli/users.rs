//! `invited users …`: local users and their invite settings.

use clap::Subcommand;
use invited_matrix::Value;

use super::{parse_json_arg, with_existing_store};
use crate::config::Config;
use crate::fatal::Error;
use crate::store::UserSetting;

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
}

pub(super) fn run(config: &Config, command: UsersCommand) -> Result<(), Error> {
    with_existing_store(config, |store| match command {
        UsersCommand::Add { user_ids } => {
            for u in &user_ids {
                let id = invited_matrix::UserId::parse(u).map_err(|e| Error::new(e.to_string()))?;
                if id.server_str() != config.server_name.as_str() {
                    return Err(Error::new(format!(
                        "{u} is not a user of {}",
                        config.server_name
                    )));
                }
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
    })
}

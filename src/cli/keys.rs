//! `invited keys …`: show, generate, import and rotate our signing key.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use invited_matrix::SigningKey;
use serde::Serialize;

use super::json::print_json;
use crate::config::Config;
use crate::fatal::Error;
use crate::keys;
use crate::server;
use crate::store::{OurKey, Store};
use crate::time::now_ms;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print our current and retired public keys.
    Show {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create our signing key if there is none yet, or write a new key to --output.
    Generate {
        /// Write a fresh key to this file (Synapse's signing.key format) instead.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Use a Synapse signing.key file as our key (to move a server name to invited). The
    /// current key is retired. Restart the server afterwards.
    Import {
        /// A Synapse signing.key file.
        file: PathBuf,
    },
    /// Retire the current key (it moves to old_verify_keys) and start a new one. Restart the
    /// server afterwards.
    Rotate,
}

/// `keys show --json`. Fields in code-point order (see [`super::json`]).
#[derive(Serialize)]
struct ShownKeys<'a> {
    current_key_id: &'a str,
    keys: Vec<ShownKey<'a>>,
    server_name: &'a str,
}

/// One of our keys; `expired_ts` is null for the current one.
#[derive(Serialize)]
struct ShownKey<'a> {
    created_ts: i64,
    expired_ts: Option<i64>,
    key_id: &'a str,
    public_key: &'a str,
}

impl<'a> From<&'a OurKey> for ShownKey<'a> {
    fn from(k: &'a OurKey) -> Self {
        ShownKey {
            created_ts: k.created_ts,
            expired_ts: k.expired_ts,
            key_id: &k.key_id,
            public_key: &k.public_key,
        }
    }
}

pub(super) fn run(config: &Config, command: KeysCommand) -> Result<(), Error> {
    match command {
        KeysCommand::Show { json } => keys_show(config, json),
        KeysCommand::Generate { output: Some(path) } => {
            let key = keys::generate_key()?;
            keys::write_key_file(&path, &key, false)?;
            println!(
                "wrote {} ({}) to {}",
                key.key_id(),
                key.verify_key().to_base64(),
                path.display()
            );
            Ok(())
        }
        KeysCommand::Generate { output: None } => {
            let path = config.signing_key_path();
            if path.exists() {
                return Err(Error::new(format!(
                    "{} already exists; use 'invited keys rotate' to replace it",
                    path.display()
                )));
            }
            let (store, key) = server::open_state(config)?;
            store.close()?;
            println!(
                "created {} ({}) in {}",
                key.key_id(),
                key.verify_key().to_base64(),
                path.display()
            );
            Ok(())
        }
        KeysCommand::Import { file } => {
            let key = replace_key(config, |key_path, store| {
                keys::import(&file, key_path, store, now_ms())
            })?;
            println!(
                "imported {} ({}); restart the server to use it",
                key.key_id(),
                key.verify_key().to_base64()
            );
            Ok(())
        }
        KeysCommand::Rotate => {
            let key = replace_key(config, |key_path, store| {
                keys::rotate(key_path, store, now_ms())
            })?;
            println!(
                "new key {} ({}); the previous key is retired; restart the server to use it",
                key.key_id(),
                key.verify_key().to_base64()
            );
            Ok(())
        }
    }
}

/// Makes a new key current through `change` (which retires the old one), creating the data
/// directory and database if needed; the server only picks it up when restarted.
fn replace_key(
    config: &Config,
    change: impl FnOnce(&Path, &mut Store) -> Result<SigningKey, Error>,
) -> Result<SigningKey, Error> {
    server::prepare_data_dir(config)?;
    let mut store = Store::open(&config.database_path())?;
    let key = change(&config.signing_key_path(), &mut store)?;
    store.close()?;
    Ok(key)
}

fn keys_show(config: &Config, json: bool) -> Result<(), Error> {
    let key_path = config.signing_key_path();
    if !key_path.exists() {
        return Err(Error::new(format!(
            "no signing key at {}; start the server once or run 'invited keys generate'",
            key_path.display()
        )));
    }
    let (store, key) = server::open_state(config)?;
    let history = store.our_keys()?;
    store.close()?;
    if json {
        print_json(&ShownKeys {
            current_key_id: key.key_id().as_str(),
            keys: history.iter().map(ShownKey::from).collect(),
            server_name: config.server_name.as_str(),
        })?;
    } else {
        println!("server name: {}", config.server_name);
        println!(
            "{:<20} {:<44} {:<16} expired_ts",
            "key_id", "public_key", "created_ts"
        );
        for k in &history {
            println!(
                "{:<20} {:<44} {:<16} {}",
                k.key_id,
                k.public_key,
                k.created_ts,
                k.expired_ts.map_or("current".to_owned(), |t| t.to_string())
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::json::tests::assert_canonical;
    use super::*;

    #[test]
    fn json_is_what_it_always_was() {
        let history = [
            OurKey {
                key_id: "ed25519:b".into(),
                public_key: "PUB+b".into(),
                created_ts: 20,
                expired_ts: None,
            },
            OurKey {
                key_id: "ed25519:a".into(),
                public_key: "PUB/a".into(),
                created_ts: 10,
                expired_ts: Some(20),
            },
        ];
        let shown = ShownKeys {
            current_key_id: "ed25519:b",
            keys: history.iter().map(ShownKey::from).collect(),
            server_name: "example.test",
        };
        assert_eq!(
            assert_canonical(&shown),
            r#"{"current_key_id":"ed25519:b","keys":[{"created_ts":20,"expired_ts":null,"key_id":"ed25519:b","public_key":"PUB+b"},{"created_ts":10,"expired_ts":20,"key_id":"ed25519:a","public_key":"PUB/a"}],"server_name":"example.test"}"#
        );
    }
}

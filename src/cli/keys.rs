//! `invited keys …`: show, generate, import and rotate our signing key.

use std::path::PathBuf;

use clap::Subcommand;
use invited_matrix::Value;

use crate::config::Config;
use crate::fatal::Error;
use crate::keys;
use crate::server;
use crate::store::Store;
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
            server::prepare_data_dir(config)?;
            let mut store = Store::open(&config.database_path())?;
            let key = keys::import(&file, &config.signing_key_path(), &mut store, now_ms())?;
            store.close()?;
            println!(
                "imported {} ({}); restart the server to use it",
                key.key_id(),
                key.verify_key().to_base64()
            );
            Ok(())
        }
        KeysCommand::Rotate => {
            server::prepare_data_dir(config)?;
            let mut store = Store::open(&config.database_path())?;
            let key = keys::rotate(&config.signing_key_path(), &mut store, now_ms())?;
            store.close()?;
            println!(
                "new key {} ({}); the previous key is retired; restart the server to use it",
                key.key_id(),
                key.verify_key().to_base64()
            );
            Ok(())
        }
    }
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
        let mut keys_out = Vec::new();
        for k in &history {
            let mut o = invited_matrix::Object::new();
            o.insert("key_id".into(), k.key_id.clone().into());
            o.insert("public_key".into(), k.public_key.clone().into());
            o.insert("created_ts".into(), Value::int(k.created_ts));
            o.insert(
                "expired_ts".into(),
                k.expired_ts.map_or(Value::Null, Value::int),
            );
            keys_out.push(Value::Object(o));
        }
        let mut out = invited_matrix::Object::new();
        out.insert("server_name".into(), config.server_name.as_str().into());
        out.insert("current_key_id".into(), key.key_id().as_str().into());
        out.insert("keys".into(), Value::Array(keys_out));
        println!("{}", Value::Object(out));
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

//! The command line: `serve` (the default), `keys …`, `check-config`. Thin commands over the
//! store, keys and config modules.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use invited_matrix::Value;

use crate::Error;
use crate::config::Config;
use crate::keys;
use crate::routes::now_ms;
use crate::server;
use crate::store::Store;

/// invited answers Matrix federation invites for the users of one server: it checks each
/// invite against the rules of its room version, co-signs it and keeps it in SQLite.
#[derive(Debug, Parser)]
#[command(name = "invited", version, about, long_about = None)]
pub struct Cli {
    /// The TOML configuration file. Without one, invited runs on an embedded default
    /// (127.0.0.1:8448, server name localhost:8448, data in ./invited-data).
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "INVITED_CONFIG",
        value_name = "PATH"
    )]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default command).
    Serve,
    /// Show or manage our signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Check the configuration, the data directory, the key file and the TLS files, then exit.
    CheckConfig,
}

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

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<(), Error> {
    let config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default(),
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => server::serve(config),
        Command::CheckConfig => check_config(&config),
        Command::Keys(KeysCommand::Show { json }) => keys_show(&config, json),
        Command::Keys(KeysCommand::Generate { output: Some(path) }) => {
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
        Command::Keys(KeysCommand::Generate { output: None }) => {
            let path = config.signing_key_path();
            if path.exists() {
                return Err(Error::new(format!(
                    "{} already exists; use 'invited keys rotate' to replace it",
                    path.display()
                )));
            }
            let (store, key) = server::open_state(&config)?;
            store.close()?;
            println!(
                "created {} ({}) in {}",
                key.key_id(),
                key.verify_key().to_base64(),
                path.display()
            );
            Ok(())
        }
        Command::Keys(KeysCommand::Import { file }) => {
            server::prepare_data_dir(&config)?;
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
        Command::Keys(KeysCommand::Rotate) => {
            server::prepare_data_dir(&config)?;
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

fn check_config(config: &Config) -> Result<(), Error> {
    let source = config
        .source
        .as_ref()
        .map_or("the embedded default".to_owned(), |p| {
            p.display().to_string()
        });
    println!("configuration: {source}");
    println!("server_name: {}", config.server_name);
    println!("listen: {}", config.listen);
    println!("data_dir: {}", config.data_dir.display());
    let dir = &config.data_dir;
    if dir.exists() {
        if !dir.is_dir() {
            return Err(Error::new(format!(
                "data_dir {} is not a directory",
                dir.display()
            )));
        }
        let probe = dir.join(".invited-write-test");
        std::fs::write(&probe, b"")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|e| Error::new(format!("data_dir {} is not writable: {e}", dir.display())))?;
    } else {
        println!("data_dir does not exist yet; it will be created on first start");
    }
    let key_path = config.signing_key_path();
    if key_path.exists() {
        let key = keys::read_key_file(&key_path)?;
        println!(
            "signing key: {} ({})",
            key.key_id(),
            key.verify_key().to_base64()
        );
    } else {
        println!("signing key: none yet; one will be created on first start");
    }
    if let Some(tls) = &config.tls {
        invited_http::load_tls_config(&tls.certificate, &tls.private_key).map_err(Error::new)?;
        println!("tls: {} ok", tls.certificate.display());
    } else {
        println!("tls: off (plain HTTP; put invited behind a TLS proxy or configure [tls])");
    }
    if let Some(ca) = &config.federation.ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| Error::new(format!("federation.ca_file {}: {e}", ca.display())))?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(Error::new(format!(
                "federation.ca_file {}: no PEM certificate in it",
                ca.display()
            )));
        }
    }
    println!("ok");
    Ok(())
}

//! The command line: `serve` (the default), `keys …`, `check-config`, `invites …`,
//! `policy …`, `refusals list`, `users …`, `backup FILE`. Thin commands over the store, keys and config
//! modules; one module per command group, holding that group's clap definitions too.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use invited_matrix::Value;

use crate::config::Config;
use crate::fatal::Error;
use crate::server;
use crate::store::Store;

mod check_config;
mod invites;
mod json;
mod keys;
mod policy;
mod refusals;
mod users;
mod watch;

pub use invites::InvitesCommand;
pub use keys::KeysCommand;
pub use policy::PolicyCommand;
pub use refusals::RefusalsCommand;
pub use users::UsersCommand;

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
    /// List, show, reject and watch received invites.
    #[command(subcommand)]
    Invites(InvitesCommand),
    /// Server rules and switches for invites (take effect on the next request).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The log of refused invites.
    #[command(subcommand)]
    Refusals(RefusalsCommand),
    /// Local users and their invite settings (normally written by the hosting homeserver).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Write a consistent copy of the database to FILE while the server runs (SQLite's online
    /// backup; the copy is integrity-checked, then moved into place atomically).
    Backup {
        /// Where the copy goes (replaced if it exists).
        file: PathBuf,
    },
    /// Delete now what [retention] says is no longer needed (the running server does it
    /// hourly): finished invites and their room state, unused PDUs, old remote keys.
    Prune {
        /// Only count what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<(), Error> {
    let config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default(),
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => server::serve(config),
        Command::Invites(c) => invites::run(&config, c),
        Command::Policy(c) => policy::run(&config, c),
        Command::Refusals(c) => refusals::run(&config, c),
        Command::Users(c) => users::run(&config, c),
        Command::CheckConfig => check_config::run(&config),
        Command::Keys(c) => keys::run(&config, c),
        Command::Prune { dry_run } => with_existing_store(&config, |store| {
            let (counts, verb) = if dry_run {
                (
                    crate::maintenance::prunable(store, &config.retention)?,
                    "would delete",
                )
            } else {
                (
                    crate::maintenance::prune(
                        store,
                        &config.retention,
                        std::time::Duration::from_millis(10),
                    )?,
                    "deleted",
                )
            };
            println!(
                "{verb} {} finished invite(s), {} unused PDU(s), {} remote key(s), \
                 {} change-log row(s), {} finished notification(s)",
                counts.invites,
                counts.pdus,
                counts.remote_keys,
                counts.changes,
                counts.notifications
            );
            Ok(())
        }),
        Command::Backup { file } => with_existing_store(&config, |store| {
            let report = store.backup_to(&file)?;
            println!(
                "backed up {} invite(s), {} bytes, to {} (integrity check: ok)",
                report.invites,
                report.bytes,
                file.display()
            );
            Ok(())
        }),
    }
}

/// Runs `command` on the database of a server that has been started at least once, and
/// closes it (reporting a failed close) unless the command failed.
fn with_existing_store(
    config: &Config,
    command: impl FnOnce(&mut Store) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut store = Store::open(&existing_database(config)?)?;
    command(&mut store)?;
    store.close()?;
    Ok(())
}

/// The database's path, or the error every command gives before the server first ran.
fn existing_database(config: &Config) -> Result<PathBuf, Error> {
    let path = config.database_path();
    if !path.exists() {
        return Err(Error::new(format!(
            "no database at {}; start the server once first",
            path.display()
        )));
    }
    Ok(path)
}

/// Parses JSON from the command line or the database; `what` names it in the error.
fn parse_json_arg(text: &str, what: &str) -> Result<Value, Error> {
    invited_matrix::json::parse(text).map_err(|e| Error::new(format!("{what}: {e}")))
}

//! The command line: `serve` (the default), `keys …`, `check-config`. Thin commands over the
//! store, keys and config modules.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use invited_matrix::Value;

use crate::config::Config;
use crate::fatal::Error;
use crate::keys;
use crate::server;
use crate::store::{InviteState, PolicyRule, RuleAction, RuleKind, Store, Switch, UserSetting};
use crate::time::now_ms;

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
    /// List, show and reject received invites.
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
}

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

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Refuse invites (403 M_FORBIDDEN) when the origin, the inviter's server or the room's
    /// server matches GLOB (e.g. '*.spam.example').
    DenyServer { glob: String },
    /// Allow servers matching GLOB (what allow-list mode lets through).
    AllowServer { glob: String },
    /// Silently drop invites from servers matching GLOB: answered 200, stored as ignored.
    IgnoreServer { glob: String },
    /// Refuse invites from users matching GLOB (full user IDs).
    DenyUser { glob: String },
    /// Silently drop invites from users matching GLOB.
    IgnoreUser { glob: String },
    /// Remove every rule with this exact GLOB.
    Remove { glob: String },
    /// Set a switch: refuse-all, allow-list-mode, known-users-only (on, off, or default to
    /// fall back to the config file).
    Set {
        #[arg(value_parser = ["refuse-all", "allow-list-mode", "known-users-only"])]
        switch: String,
        #[arg(value_parser = ["on", "off", "default"])]
        value: String,
    },
    /// Print the rules and switches.
    Show {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RefusalsCommand {
    /// Refused invites, newest first.
    List {
        /// Only since this long ago (e.g. 30m, 12h, 7d) or this Unix time in milliseconds.
        #[arg(long)]
        since: Option<String>,
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
}

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
        Command::Invites(c) => invites_command(&config, c),
        Command::Policy(c) => policy_command(&config, c),
        Command::Refusals(c) => refusals_command(&config, c),
        Command::Users(c) => users_command(&config, c),
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

/// Opens the database of a server that has been started at least once.
fn open_existing_store(config: &Config) -> Result<Store, Error> {
    let path = config.database_path();
    if !path.exists() {
        return Err(Error::new(format!(
            "no database at {}; start the server once first",
            path.display()
        )));
    }
    Ok(Store::open(&path)?)
}

fn obj(pairs: Vec<(&str, Value)>) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn opt(v: &Option<String>) -> Value {
    v.as_ref().map_or(Value::Null, |s| s.clone().into())
}

fn parse_json_arg(text: &str, what: &str) -> Result<Value, Error> {
    invited_matrix::json::parse(text).map_err(|e| Error::new(format!("{what}: {e}")))
}

fn invites_command(config: &Config, command: InvitesCommand) -> Result<(), Error> {
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

fn policy_command(config: &Config, command: PolicyCommand) -> Result<(), Error> {
    let mut store = open_existing_store(config)?;
    let rule = |kind: RuleKind, glob: &str, action: RuleAction| -> Result<PolicyRule, Error> {
        if glob.is_empty() || glob.contains(char::is_whitespace) {
            return Err(Error::new(format!("bad glob {glob:?}")));
        }
        Ok(PolicyRule {
            kind,
            pattern: glob.into(),
            action,
            source: "cli".into(),
        })
    };
    let add = |store: &mut Store, r: PolicyRule| -> Result<(), Error> {
        let added = store.add_policy_rule(&r, now_ms())?;
        println!(
            "{} {} {} rule {}",
            if added { "added" } else { "already had" },
            r.kind,
            r.action,
            r.pattern
        );
        Ok(())
    };
    match command {
        PolicyCommand::DenyServer { glob } => {
            add(&mut store, rule(RuleKind::Server, &glob, RuleAction::Deny)?)?
        }
        PolicyCommand::AllowServer { glob } => add(
            &mut store,
            rule(RuleKind::Server, &glob, RuleAction::Allow)?,
        )?,
        PolicyCommand::IgnoreServer { glob } => add(
            &mut store,
            rule(RuleKind::Server, &glob, RuleAction::Ignore)?,
        )?,
        PolicyCommand::DenyUser { glob } => {
            add(&mut store, rule(RuleKind::User, &glob, RuleAction::Deny)?)?
        }
        PolicyCommand::IgnoreUser { glob } => {
            add(&mut store, rule(RuleKind::User, &glob, RuleAction::Ignore)?)?
        }
        PolicyCommand::Remove { glob } => {
            let n = store.remove_policy_rules(&glob)?;
            if n == 0 {
                return Err(Error::new(format!("no rule with pattern {glob}")));
            }
            println!("removed {n} rule(s) for {glob}");
        }
        PolicyCommand::Set { switch, value } => {
            let name = switch.replace('-', "_");
            let switch_value =
                Switch::parse(&name).ok_or_else(|| Error::new(format!("no switch {switch}")))?;
            let v = match value.as_str() {
                "on" => Some(true),
                "off" => Some(false),
                _ => None,
            };
            store.set_policy_setting(switch_value, v)?;
            println!("{switch} = {value}");
        }
        PolicyCommand::Show { json } => {
            let rules = store.policy_rules()?;
            let settings = store.policy_settings()?;
            let p = &config.policy;
            let effective = |switch: Switch, default: bool| {
                let set = settings.iter().find(|(s, _)| *s == switch);
                (switch.as_str(), set.map_or(default, |(_, v)| *v))
            };
            let switches = [
                effective(Switch::RefuseAll, p.refuse_all),
                effective(Switch::AllowListMode, p.allow_list_mode),
                effective(Switch::KnownUsersOnly, p.known_users_only),
            ];
            if json {
                let out = obj(vec![
                    (
                        "switches",
                        obj(switches
                            .iter()
                            .map(|(n, v)| (*n, Value::Bool(*v)))
                            .collect()),
                    ),
                    (
                        "rules",
                        Value::Array(
                            rules
                                .iter()
                                .map(|r| {
                                    obj(vec![
                                        ("kind", r.kind.as_str().into()),
                                        ("pattern", r.pattern.clone().into()),
                                        ("action", r.action.as_str().into()),
                                        ("source", r.source.clone().into()),
                                    ])
                                })
                                .collect(),
                        ),
                    ),
                    (
                        "rate_limits",
                        obj(vec![
                            (
                                "per_origin_per_second",
                                Value::from(p.per_origin_per_second.to_string()),
                            ),
                            (
                                "per_origin_burst",
                                Value::int(i64::from(p.per_origin_burst)),
                            ),
                            (
                                "per_invitee_per_second",
                                Value::from(p.per_invitee_per_second.to_string()),
                            ),
                            (
                                "per_invitee_burst",
                                Value::int(i64::from(p.per_invitee_burst)),
                            ),
                        ]),
                    ),
                ]);
                println!("{out}");
            } else {
                for (n, v) in switches {
                    println!("{n}: {}", if v { "on" } else { "off" });
                }
                println!(
                    "rate limits: {}/s (burst {}) per origin, {}/s (burst {}) per invitee",
                    p.per_origin_per_second,
                    p.per_origin_burst,
                    p.per_invitee_per_second,
                    p.per_invitee_burst
                );
                println!("{:<7} {:<7} {:<8} pattern", "kind", "action", "source");
                for r in rules {
                    println!(
                        "{:<7} {:<7} {:<8} {}",
                        r.kind, r.action, r.source, r.pattern
                    );
                }
            }
        }
    }
    store.close()?;
    Ok(())
}

/// `30m`, `12h`, `7d` ago, or an absolute Unix time in milliseconds.
fn parse_since(text: &str, now: i64) -> Result<i64, Error> {
    let bad = || {
        Error::new(format!(
            "--since {text}: expected e.g. 30m, 12h, 7d or a Unix time in ms"
        ))
    };
    let (num, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: i64 = num.parse().map_err(|_| bad())?;
    let ms = match unit {
        "" => return Ok(n),
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    Ok(now.saturating_sub(n.saturating_mul(ms)))
}

fn refusals_command(config: &Config, command: RefusalsCommand) -> Result<(), Error> {
    let store = open_existing_store(config)?;
    let RefusalsCommand::List { since, limit, json } = command;
    let since = match since {
        Some(s) => parse_since(&s, now_ms())?,
        None => 0,
    };
    let rows = store.refusals_since(since, limit)?;
    if json {
        let items = rows
            .iter()
            .map(|r| {
                obj(vec![
                    ("ts", Value::int(r.ts)),
                    ("origin", r.origin.clone().into()),
                    ("sender", opt(&r.sender)),
                    ("invitee", opt(&r.invitee)),
                    ("room_id", opt(&r.room_id)),
                    ("event_id", opt(&r.event_id)),
                    ("rule", r.rule.clone().into()),
                    ("errcode", r.errcode.clone().into()),
                    ("status", Value::int(r.status)),
                ])
            })
            .collect();
        println!("{}", Value::Array(items));
    } else {
        println!(
            "{:<14} {:<24} {:<28} {:<18} rule",
            "ts", "origin", "invitee", "errcode"
        );
        for r in &rows {
            println!(
                "{:<14} {:<24} {:<28} {:<18} {}",
                r.ts,
                r.origin,
                r.invitee.as_deref().unwrap_or("-"),
                r.errcode,
                r.rule
            );
        }
    }
    store.close()?;
    Ok(())
}

fn users_command(config: &Config, command: UsersCommand) -> Result<(), Error> {
    let mut store = open_existing_store(config)?;
    match command {
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
        }
    }
    store.close()?;
    Ok(())
}

//! `invited serve`: prepare the data directory, key and database, then run the HTTP edge until
//! SIGINT/SIGTERM.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;

use invited_http::{Server, ServerOptions};

use crate::config::Config;
use crate::fatal::Error;
use crate::federation::keyring::Keyring;
use crate::federation::outbound::Outbound;
use crate::keys;
use crate::maintenance::Maintenance;
use crate::outbox::push::Pushes;
use crate::outbox::rejection::Rejections;
use crate::outbox::{Doorbell, Outbox};
use crate::policy::Policy;
use crate::routes::App;
use crate::store::{PolicyRule, RuleAction, RuleKind, Store, StorePool};
use crate::time::now_ms;
use crate::writer::Writer;

/// Creates the data directory (mode 0700) if it does not exist, and checks it is a directory.
pub fn prepare_data_dir(config: &Config) -> Result<(), Error> {
    let dir = &config.data_dir;
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                Error::new(format!(
                    "cannot create data directory {}: {e}",
                    dir.display()
                ))
            })?;
        log::info!("created data directory {}", dir.display());
    } else if !dir.is_dir() {
        return Err(Error::new(format!(
            "data_dir {} exists and is not a directory",
            dir.display()
        )));
    }
    warn_if_shared(dir, "data_dir", "chmod 700");
    Ok(())
}

/// Warns when others on the machine can read what only invited should: the data directory,
/// the key file, the database (it holds every invite).
fn warn_if_shared(path: &std::path::Path, what: &str, fix: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        log::warn!(
            "{what} {} is readable by other users (mode {:o}); {fix} {}",
            path.display(),
            meta.permissions().mode() & 0o777,
            path.display()
        );
    }
}

/// Creates the database file readable by us alone before SQLite opens it (SQLite gives its
/// -wal and -shm files the database file's mode).
fn create_private_file(path: &std::path::Path) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    if path.exists() {
        return Ok(());
    }
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|e| Error::new(format!("cannot create database {}: {e}", path.display())))
}

/// Opens the database and our key, creating both on first start.
pub fn open_state(config: &Config) -> Result<(Store, invited_matrix::SigningKey), Error> {
    prepare_data_dir(config)?;
    create_private_file(&config.database_path())?;
    warn_if_shared(&config.database_path(), "database", "chmod 600");
    warn_if_shared(&config.signing_key_path(), "signing key file", "chmod 600");
    let mut store = Store::open(&config.database_path())?;
    let key = keys::load_or_create(&config.signing_key_path(), &mut store, now_ms())?;
    Ok((store, key))
}

/// Loads the config file's rule lists as rules of source `config` (replacing earlier ones).
pub fn apply_config_rules(config: &Config, store: &mut Store) -> Result<(), Error> {
    let p = &config.policy;
    let rules: Vec<PolicyRule> = [
        (&p.deny_servers, RuleAction::Deny),
        (&p.allow_servers, RuleAction::Allow),
        (&p.ignore_servers, RuleAction::Ignore),
    ]
    .into_iter()
    .flat_map(|(list, action)| {
        list.iter().map(move |pattern| PolicyRule {
            kind: RuleKind::Server,
            pattern: pattern.clone(),
            action,
            source: "config".into(),
        })
    })
    .collect();
    store.replace_config_rules(&rules, now_ms())?;
    Ok(())
}

/// Runs the server until a signal asks it to stop.
pub fn serve(config: Config) -> Result<(), Error> {
    if config.is_embedded_default() {
        log::warn!(
            "!!! No configuration given: running on the embedded default, as server name {} \
             on plain HTTP. No other homeserver can reach this. Write a config file and pass \
             --config for real use (see README).",
            config.server_name
        );
    }
    invited_http::bound_allocator_retention();
    let (mut store, key) = open_state(&config)?;
    let tls = match &config.tls {
        Some(tls) => Some(
            invited_http::load_tls_config(&tls.certificate, &tls.private_key)
                .map_err(Error::new)?,
        ),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    apply_config_rules(&config, &mut store)?;
    let pool = Arc::new(StorePool::new(&config.database_path()));
    let net = Arc::new(Outbound::new(
        &config.federation,
        &config.push,
        config.server_name.clone(),
        key.clone(),
    )?);
    let metrics = Arc::new(crate::metrics::Metrics::new(Some((
        config.database_path(),
        pool.clone(),
    ))));
    let keyring = Keyring::new(
        config.server_name.clone(),
        &config.federation,
        pool.clone(),
        config.workers,
        net.clone(),
    )
    .with_metrics(metrics.clone());
    // Rung by the writer when it stores a pending invite: push notifications go out at once.
    let doorbell = Arc::new(Doorbell::default());
    let app = Arc::new(App {
        server_name: config.server_name.clone(),
        signing_key: key.clone(),
        key_history: store.our_keys()?,
        key_lifetime_ms: i64::try_from(config.key_lifetime.as_millis()).unwrap_or(i64::MAX),
        keyring,
        store: pool.clone(),
        invites: config.invites.clone(),
        disk: crate::disk::DiskSpace::new(
            config.data_dir.clone(),
            config.invites.min_free_disk_bytes,
        ),
        policy: Policy::new(config.policy.clone()),
        verified_state: crate::invite::VerifiedPdus::new(),
        json_memory: crate::json_memory::JsonMemory::new(config.http.max_json_memory_bytes),
        metrics: metrics.clone(),
        writer: Writer::start(
            &config.database_path(),
            (
                config.policy.refusal_log_max_days * 24 * 3600 * 1000,
                config.policy.refusal_log_max_rows,
            ),
            metrics.clone(),
            doorbell.clone(),
        )?,
    });
    let server = Server::bind(
        config.listen,
        ServerOptions {
            workers: config.workers,
            limits: config.http_limits(),
            tls,
        },
    )
    .map_err(|e| Error::new(format!("cannot listen on {}: {e}", config.listen)))?;

    let shutdown = server.shutdown_handle();
    metrics.watch_connections(server.connection_count());
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .map_err(|e| Error::new(format!("cannot install signal handlers: {e}")))?;
    let signal_handle = signals.handle();
    let signal_thread = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                log::info!("signal {sig} received: finishing in-flight requests, then stopping");
                shutdown.shutdown();
            }
        })
        .map_err(|e| Error::new(format!("cannot start the signal thread: {e}")))?;

    log::info!(
        "listening on {scheme}://{} as {} with key {} ({} workers)",
        server.local_addr(),
        config.server_name,
        key.key_id(),
        config.workers
    );
    let outbox = Outbox::start(
        pool.clone(),
        vec![
            Arc::new(Rejections::new(
                pool.clone(),
                net.clone(),
                config.server_name.clone(),
                key.clone(),
                &config.rejections,
            )),
            Arc::new(Pushes::new(pool.clone(), net, &config.push)),
        ],
        doorbell,
        metrics.clone(),
    )?;
    let maintenance = Maintenance::start(pool.clone(), config.retention.clone())?;
    // Metrics on a listener of their own (never the federation port), one worker.
    let metrics_server = match config.metrics_listen {
        None => None,
        Some(addr) => {
            let server = Server::bind(
                addr,
                ServerOptions {
                    workers: 1,
                    limits: invited_http::Limits::default(),
                    tls: None,
                },
            )
            .map_err(|e| Error::new(format!("cannot listen on metrics.listen {addr}: {e}")))?;
            log::info!("metrics on http://{}/metrics", server.local_addr());
            let handle = server.shutdown_handle();
            let endpoint = Arc::new(crate::metrics::MetricsEndpoint(metrics.clone()));
            let thread = std::thread::Builder::new()
                .name("metrics".into())
                .spawn(move || server.run(endpoint))
                .map_err(|e| Error::new(format!("cannot start the metrics thread: {e}")))?;
            Some((handle, thread))
        }
    };
    let result = server.run(app.clone());
    if let Some((handle, thread)) = metrics_server {
        handle.shutdown();
        let _ = thread.join();
    }
    maintenance.stop();
    outbox.stop();
    app.writer.stop();
    drop(app);
    pool.close()?;
    signal_handle.close();
    let _ = signal_thread.join();
    store.close()?;
    log::info!("stopped; database closed");
    result.map_err(|e| Error::new(format!("server failed: {e}")))
}

//! `invited check-config`: what a start would find wrong, found without starting.

use crate::config::Config;
use crate::fatal::Error;
use crate::keys;

pub(super) fn run(config: &Config) -> Result<(), Error> {
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
    let db = config.database_path();
    if db.exists() {
        let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let wal = db.with_file_name("invited.db-wal");
        let store = crate::store::Store::connect(&db)?;
        store.quick_check()?;
        println!(
            "database: {} ({:.1} MiB, WAL {:.1} MiB, schema version {}, quick check ok)",
            db.display(),
            mib(size(&db)),
            mib(size(&wal)),
            store.schema_version()?
        );
        store.close()?;
    } else {
        println!("database: none yet; it will be created on first start");
    }
    if dir.exists() {
        let disk = crate::disk::DiskSpace::new(dir.clone(), config.invites.min_free_disk_bytes);
        match disk.free_bytes() {
            Ok(free) => println!(
                "free disk space: {:.0} MiB (new invites get 503 below {:.0} MiB)",
                mib(free),
                mib(config.invites.min_free_disk_bytes)
            ),
            Err(e) => println!("free disk space: unknown ({e})"),
        }
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

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

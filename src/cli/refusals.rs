//! `invited refusals list`: the log of refused invites.

use clap::Subcommand;
use invited_matrix::Value;

use super::{obj, open_existing_store, opt};
use crate::config::Config;
use crate::fatal::Error;
use crate::time::now_ms;

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

pub(super) fn run(config: &Config, command: RefusalsCommand) -> Result<(), Error> {
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

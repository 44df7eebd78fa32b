//! `invited refusals list`: the log of refused invites.

use clap::Subcommand;
use serde::Serialize;

use super::json::print_json;
use super::with_existing_store;
use crate::config::Config;
use crate::fatal::Error;
use crate::store::RefusalRow;
use crate::text::printable;
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

/// One row of `refusals list --json`. Fields in code-point order (see [`super::json`]); the
/// optional ones are null when the refused request did not get that far.
#[derive(Serialize)]
struct ListedRefusal<'a> {
    errcode: &'a str,
    event_id: Option<&'a str>,
    invitee: Option<&'a str>,
    origin: &'a str,
    room_id: Option<&'a str>,
    rule: &'a str,
    sender: Option<&'a str>,
    status: i64,
    suppressed: i64,
    ts: i64,
}

impl<'a> From<&'a RefusalRow> for ListedRefusal<'a> {
    fn from(r: &'a RefusalRow) -> Self {
        ListedRefusal {
            errcode: &r.errcode,
            event_id: r.event_id.as_deref(),
            invitee: r.invitee.as_deref(),
            origin: &r.origin,
            room_id: r.room_id.as_deref(),
            rule: &r.rule,
            sender: r.sender.as_deref(),
            status: r.status,
            suppressed: r.suppressed,
            ts: r.ts,
        }
    }
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
    let RefusalsCommand::List { since, limit, json } = command;
    with_existing_store(config, |store| {
        let since = match since {
            Some(s) => parse_since(&s, now_ms())?,
            None => 0,
        };
        let rows = store.refusals_since(since, limit)?;
        if json {
            let items: Vec<ListedRefusal> = rows.iter().map(ListedRefusal::from).collect();
            print_json(&items)?;
        } else {
            println!(
                "{:<14} {:<24} {:<28} {:<18} rule",
                "ts", "origin", "invitee", "errcode"
            );
            for r in &rows {
                println!(
                    "{:<14} {:<24} {:<28} {:<18} {}",
                    r.ts,
                    printable(&r.origin),
                    printable(r.invitee.as_deref().unwrap_or("-")),
                    printable(&r.errcode),
                    printable(&r.rule)
                );
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::super::json::tests::assert_canonical;
    use super::*;

    #[test]
    fn list_json_shape() {
        let rows = [RefusalRow {
            ts: 5,
            origin: "spam.test".into(),
            sender: Some("@m:spam.test".into()),
            invitee: None,
            room_id: None,
            event_id: Some("$e".into()),
            rule: "server deny *.spam.test".into(),
            errcode: "M_FORBIDDEN".into(),
            status: 403,
            suppressed: 2,
        }];
        let items: Vec<ListedRefusal> = rows.iter().map(ListedRefusal::from).collect();
        assert_eq!(
            assert_canonical(&items),
            concat!(
                r#"[{"errcode":"M_FORBIDDEN","event_id":"$e","invitee":null,"origin":"spam.test","#,
                r#""room_id":null,"rule":"server deny *.spam.test","sender":"@m:spam.test","#,
                r#""status":403,"suppressed":2,"ts":5}]"#
            )
        );
    }

    #[test]
    fn since_takes_durations_and_times() {
        assert_eq!(parse_since("1700000000000", 0).unwrap(), 1_700_000_000_000);
        assert_eq!(
            parse_since("30m", 10_000_000).unwrap(),
            10_000_000 - 1_800_000
        );
        assert_eq!(parse_since("2d", 0).unwrap(), -172_800_000);
        for bad in ["", "m", "5x", "5 m", "-5m"] {
            assert!(parse_since(bad, 0).is_err(), "{bad}");
        }
    }
}

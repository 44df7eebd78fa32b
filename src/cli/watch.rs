//! `invited invites watch`: follows the change log (table `invite_changes`) and prints each
//! new invite and change of state as it happens, for a human or (`--json`) a script.
//!
//! Idle, it costs one `PRAGMA data_version` every [`POLL`]: that number moves only when
//! another connection commits, so no row is read until something may have changed.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::existing_database;
use super::json::to_json;
use crate::config::Config;
use crate::fatal::Error;
use crate::store::{InviteChange, Store};
use crate::text::printable;
use crate::time::utc_iso8601;

/// How often an idle watcher looks at the data version: well under the second a consumer may
/// wait, and a pragma that reads no page costs next to nothing.
const POLL: Duration = Duration::from_millis(100);

/// Rows read per query while catching up, so a long backlog is not held in memory at once.
const BATCH: usize = 500;

/// One line of `invites watch --json`. Fields in code-point order (see [`super::json`]).
#[derive(Serialize)]
struct WatchedChange<'a> {
    cursor: i64,
    event_id: &'a str,
    invitee: &'a str,
    room_id: &'a str,
    room_name: Option<&'a str>,
    sender: &'a str,
    state: &'a str,
    ts: i64,
}

impl<'a> From<&'a InviteChange> for WatchedChange<'a> {
    fn from(c: &'a InviteChange) -> Self {
        WatchedChange {
            cursor: c.cursor,
            event_id: &c.event_id,
            invitee: &c.invitee,
            room_id: &c.room_id,
            room_name: c.room_name.as_deref(),
            sender: &c.sender,
            state: &c.state,
            ts: c.ts,
        }
    }
}

/// Runs the watcher until SIGINT or SIGTERM (after the line being written) or until the
/// reader of stdout goes away (EPIPE: Rust ignores SIGPIPE, so the write fails); both exit 0.
pub(super) fn run(config: &Config, json: bool, since: Option<i64>) -> Result<(), Error> {
    // `connect`, not `open`: opening migrates, which is a write transaction.
    let store = Store::connect(&existing_database(config)?)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| Error::new(format!("cannot handle signal {signal}: {e}")))?;
    }
    let result = follow(&store, since, &stop, json, &mut io::stdout().lock());
    store.close()?;
    result
}

/// Prints the changes after `since` (or, without it, after the newest one now), then each new
/// one, until `stop` is set or `out` is closed by its reader.
fn follow(
    store: &Store,
    since: Option<i64>,
    stop: &AtomicBool,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Error> {
    // The version is read before the rows: a commit after this read moves it, so no change
    // can slip between a read that missed it and the wait.
    let mut version = store.data_version()?;
    let mut cursor = match since {
        Some(c) => c,
        None => store.last_change_cursor()?,
    };
    // On stderr (stdout is for the changes): where a later `--since` can resume if nothing
    // happens, and the moment from which nothing is missed.
    log::info!("watching the changes after cursor {cursor}");
    loop {
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let batch = store.changes_after(cursor, BATCH)?;
            if batch.is_empty() {
                break;
            }
            let mut text = String::new();
            for change in &batch {
                // Cursors have no holes but deleted rows, so a consumer should know.
                if change.cursor > cursor + 1 {
                    log::warn!(
                        "changes {} to {} are no longer in the change log (deleted, e.g. by \
                         [retention]); going on after them",
                        cursor + 1,
                        change.cursor - 1
                    );
                }
                cursor = change.cursor;
                text.push_str(&line(change, json)?);
                text.push('\n');
            }
            if !write_batch(out, &text)? {
                return Ok(());
            }
            if batch.len() < BATCH {
                break;
            }
        }
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            std::thread::sleep(POLL);
            let now = store.data_version()?;
            if now != version {
                version = now;
                break;
            }
        }
    }
}

/// Writes and flushes (stdout is often a pipe, and a consumer waits for each line); `false`
/// when the reader has gone away.
fn write_batch(out: &mut impl Write, text: &str) -> Result<bool, Error> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Error::new(format!("cannot write to stdout: {e}"))),
    }
}

/// One change as a line (without the newline): JSON, or for a human `CURSOR TIME STATE
/// INVITEE from SENDER in ROOM EVENT_ID`, the room by its name (quoted) when it has one.
fn line(change: &InviteChange, json: bool) -> Result<String, Error> {
    if json {
        return to_json(&WatchedChange::from(change));
    }
    let room = match &change.room_name {
        Some(name) => format!("\"{}\"", printable(name)),
        None => printable(&change.room_id).into_owned(),
    };
    Ok(format!(
        "{} {} {} {} from {} in {} {}",
        change.cursor,
        utc_iso8601(change.ts),
        printable(&change.state),
        printable(&change.invitee),
        printable(&change.sender),
        room,
        printable(&change.event_id)
    ))
}

#[cfg(test)]
mod tests {
    use super::super::json::tests::assert_canonical;
    use super::*;

    fn change(room_name: Option<&str>) -> InviteChange {
        InviteChange {
            cursor: 7,
            event_id: "$e".into(),
            room_id: "!r:remote.test".into(),
            invitee: "@bob:example.test".into(),
            sender: "@alice:remote.test".into(),
            state: "pending".into(),
            room_name: room_name.map(str::to_owned),
            ts: 1_735_689_599_999,
        }
    }

    #[test]
    fn json_lines_are_canonical_with_a_null_room_name_when_absent() {
        assert_eq!(
            assert_canonical(&WatchedChange::from(&change(None))),
            concat!(
                r#"{"cursor":7,"event_id":"$e","invitee":"@bob:example.test","#,
                r#""room_id":"!r:remote.test","room_name":null,"sender":"@alice:remote.test","#,
                r#""state":"pending","ts":1735689599999}"#
            )
        );
        assert!(
            line(&change(Some("Garden")), true)
                .unwrap()
                .contains(r#""room_name":"Garden""#)
        );
    }

    #[test]
    fn text_lines_name_the_room_and_escape_remote_text() {
        assert_eq!(
            line(&change(Some("Gar\u{1b}[2Jden")), false).unwrap(),
            "7 2024-12-31T23:59:59.999Z pending @bob:example.test from @alice:remote.test \
             in \"Gar\\u{1b}[2Jden\" $e"
        );
        assert_eq!(
            line(&change(None), false).unwrap(),
            "7 2024-12-31T23:59:59.999Z pending @bob:example.test from @alice:remote.test \
             in !r:remote.test $e"
        );
    }

    /// A writer whose reader has gone away.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_reader_ends_the_watch_and_other_write_errors_fail_it() {
        assert!(!write_batch(&mut Closed, "x\n").unwrap());
        let mut full: &mut [u8] = &mut [];
        assert!(write_batch(&mut full, "x\n").is_err());
        let mut out = Vec::new();
        assert!(write_batch(&mut out, "x\n").unwrap());
        assert_eq!(out, b"x\n");
    }
}

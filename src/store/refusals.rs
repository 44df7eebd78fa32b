//! The refusal log (`refusals`): what we refused, from whom, and why.

use rusqlite::{TransactionBehavior, params};

use super::{Context, Store, StoreError};

/// The most bytes of one text field a refusal row keeps. The fields come from a refused
/// request, before (or because) they failed their checks: an attacker may send megabytes.
pub const MAX_REFUSAL_FIELD_BYTES: usize = 255;
/// The most bytes of the rule or check a refusal row keeps.
pub const MAX_REFUSAL_RULE_BYTES: usize = 512;

/// One refused invite (table `refusals`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalRow {
    pub ts: i64,
    pub origin: String,
    pub sender: Option<String>,
    pub invitee: Option<String>,
    pub room_id: Option<String>,
    pub event_id: Option<String>,
    pub rule: String,
    pub errcode: String,
    pub status: i64,
    /// Refusals of the same origin left out of the log (rate limit) since its previous row.
    pub suppressed: i64,
}

impl RefusalRow {
    /// The row with every text field cut to what the table keeps (at a character
    /// boundary, marked with `…`), so a row costs a bounded number of bytes.
    pub fn bounded(mut self) -> RefusalRow {
        let cut = |s: &mut String, max: usize| {
            if s.len() > max {
                let mut end = max - '…'.len_utf8();
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.truncate(end);
                s.push('…');
            }
        };
        cut(&mut self.origin, MAX_REFUSAL_FIELD_BYTES);
        cut(&mut self.errcode, MAX_REFUSAL_FIELD_BYTES);
        cut(&mut self.rule, MAX_REFUSAL_RULE_BYTES);
        for field in [
            &mut self.sender,
            &mut self.invitee,
            &mut self.room_id,
            &mut self.event_id,
        ]
        .into_iter()
        .flatten()
        {
            cut(field, MAX_REFUSAL_FIELD_BYTES);
        }
        self
    }
}

impl Store {
    /// Records refusals in one transaction. Now and then (when a row ID is a multiple of 256)
    /// it also prunes rows older than `max_age_ms` and beyond the newest `max_rows`.
    pub fn record_refusals(
        &mut self,
        rows: &[RefusalRow],
        max_age_ms: i64,
        max_rows: i64,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(|| "cannot start a transaction".to_owned())?;
        let mut prune = false;
        for row in rows {
            let id: i64 = tx
                .prepare_cached(
                    "INSERT INTO refusals (ts, origin, sender, invitee, room_id, event_id, rule,
                         errcode, status, suppressed)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING id",
                )
                .and_then(|mut s| {
                    s.query_row(
                        params![
                            row.ts,
                            row.origin,
                            row.sender,
                            row.invitee,
                            row.room_id,
                            row.event_id,
                            row.rule,
                            row.errcode,
                            row.status,
                            row.suppressed
                        ],
                        |r| r.get(0),
                    )
                })
                .context(|| "cannot record a refusal".to_owned())?;
            prune |= id % 256 == 0;
        }
        tx.commit()
            .context(|| "cannot commit refusals".to_owned())?;
        if let (true, Some(last)) = (prune, rows.last()) {
            self.prune_refusals(last.ts - max_age_ms, max_rows)?;
        }
        Ok(())
    }

    /// Deletes refusals older than `before_ts` and all but the newest `max_rows`.
    pub fn prune_refusals(&mut self, before_ts: i64, max_rows: i64) -> Result<usize, StoreError> {
        let old = self
            .conn
            .execute("DELETE FROM refusals WHERE ts < ?1", params![before_ts])
            .context(|| "cannot prune refusals".to_owned())?;
        let extra = self
            .conn
            .execute(
                "DELETE FROM refusals WHERE id <= (SELECT id FROM refusals ORDER BY id DESC
                 LIMIT 1 OFFSET ?1)",
                params![max_rows],
            )
            .context(|| "cannot prune refusals".to_owned())?;
        Ok(old + extra)
    }

    /// Refusals since `since_ts`, newest first.
    pub fn refusals_since(&self, since_ts: i64, limit: i64) -> Result<Vec<RefusalRow>, StoreError> {
        self.query_all(
            "SELECT ts, origin, sender, invitee, room_id, event_id, rule, errcode, status,
                    suppressed
             FROM refusals WHERE ts >= ?1 ORDER BY id DESC LIMIT ?2",
            params![since_ts, limit],
            "refusals",
            |r| {
                Ok(RefusalRow {
                    ts: r.get(0)?,
                    origin: r.get(1)?,
                    sender: r.get(2)?,
                    invitee: r.get(3)?,
                    room_id: r.get(4)?,
                    event_id: r.get(5)?,
                    rule: r.get(6)?,
                    errcode: r.get(7)?,
                    status: r.get(8)?,
                    suppressed: r.get(9)?,
                })
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_bounded() {
        let huge = "é".repeat(600_000);
        let row = RefusalRow {
            ts: 1,
            origin: "a".into(),
            sender: Some(huge.clone()),
            invitee: Some("@b:us".into()),
            room_id: None,
            event_id: Some(huge.clone()),
            rule: huge,
            errcode: "M_BAD_JSON".into(),
            status: 400,
            suppressed: 0,
        }
        .bounded();
        let sender = row.sender.unwrap();
        assert!(sender.len() <= MAX_REFUSAL_FIELD_BYTES && sender.ends_with('…'));
        assert!(row.event_id.unwrap().len() <= MAX_REFUSAL_FIELD_BYTES);
        assert!(row.rule.len() <= MAX_REFUSAL_RULE_BYTES);
        assert_eq!(row.invitee.as_deref(), Some("@b:us"));
    }
}

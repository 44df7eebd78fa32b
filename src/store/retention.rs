//! Retention: what is deleted once it is no longer needed, so the file does not grow for
//! ever on a small disk. Answered invites that are finished — accepted, rejected, rejected
//! locally, rescinded, or ignored — go after a configured age with everything that refers to
//! them (room state, warnings, rejection and rescind records, finished outbox rows); full PDUs
//! no invite refers to any more go with them, and so do change-log rows and finished push
//! notifications of the same age. Pending invites and rejections being delivered
//! are never deleted. Done in batches, each its own short write transaction.

use rusqlite::{TransactionBehavior, params};

use super::{Context, Store, StoreError};

/// The states retention may delete, and the time that counts for each (when the state last
/// changed; for ignored invites, which never change, when they were received).
const FINISHED: &str =
    "state IN ('accepted', 'rejected', 'rejected_locally', 'rescinded', 'ignored')
     AND coalesce(state_changed_ts, received_ts) < ?1";

/// PDUs no invite refers to any more. `NOT IN` a list built once, not a correlated `NOT
/// EXISTS`: nothing indexes which invites refer to a PDU, so a correlated subquery reads every
/// invite's room state once per PDU (136 s for 10,000 invites, holding the write lock).
const ORPHAN_PDUS: &str = "DELETE FROM pdus WHERE id NOT IN (
    SELECT pdu_id FROM invite_room_state WHERE pdu_id IS NOT NULL)";

/// How many PDUs only the invites retention would delete (`?1` is its cutoff) refer to.
fn orphan_pdus_after_prune() -> String {
    format!(
        "SELECT count(*) FROM pdus WHERE id NOT IN (
            SELECT s.pdu_id FROM invite_room_state s JOIN invites i ON i.event_id = s.event_id
            WHERE s.pdu_id IS NOT NULL AND NOT ({FINISHED}))"
    )
}

/// What retention found (or deleted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneCounts {
    pub invites: usize,
    pub pdus: usize,
    pub remote_keys: usize,
    /// Rows of the change log (`invite_changes`).
    pub changes: usize,
    /// Push notifications delivered or given up.
    pub notifications: usize,
}

/// Change-log rows older than `?1`, oldest first.
const OLD_CHANGES: &str = "SELECT cursor FROM invite_changes WHERE ts < ?1 ORDER BY cursor";
/// Finished push notifications older than `?1`.
const OLD_NOTIFICATIONS: &str =
    "SELECT id FROM outbox WHERE kind = 'push' AND finished_ts < ?1 ORDER BY id";

impl Store {
    /// What [`Store::prune_batch`] would delete in all, without deleting.
    pub fn prunable(
        &self,
        invites_before: i64,
        keys_before: i64,
    ) -> Result<PruneCounts, StoreError> {
        let count = |sql: &str, p: i64| -> Result<usize, StoreError> {
            self.conn
                .query_row(sql, params![p], |r| r.get::<_, i64>(0))
                .map(|n| usize::try_from(n).unwrap_or(0))
                .context(|| "cannot count what retention would delete".to_owned())
        };
        Ok(PruneCounts {
            invites: count(
                &format!("SELECT count(*) FROM invites WHERE {FINISHED}"),
                invites_before,
            )?,
            // PDUs only the invites to be deleted refer to.
            pdus: count(&orphan_pdus_after_prune(), invites_before)?,
            remote_keys: count(
                "SELECT count(*) FROM remote_keys WHERE fetched_ts < ?1",
                keys_before,
            )?,
            changes: count(
                &format!("SELECT count(*) FROM ({OLD_CHANGES})"),
                invites_before,
            )?,
            notifications: count(
                &format!("SELECT count(*) FROM ({OLD_NOTIFICATIONS})"),
                invites_before,
            )?,
        })
    }

    /// Deletes at most `limit` finished invites older than `invites_before` (with what refers
    /// to them), then PDUs nothing refers to, and at most `limit` change-log rows and finished
    /// notifications of that age, in one short transaction. Returns what it deleted; call
    /// again until it deletes fewer than `limit` of each.
    pub fn prune_batch(
        &mut self,
        invites_before: i64,
        limit: usize,
    ) -> Result<PruneCounts, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(|| "cannot start a retention batch".to_owned())?;
        let fail = || "retention batch failed".to_owned();
        let ids: Vec<String> = {
            let mut stmt = tx
                .prepare(&format!(
                    "SELECT event_id FROM invites WHERE {FINISHED} ORDER BY received_ts LIMIT ?2"
                ))
                .context(fail)?;
            let rows = stmt
                .query_map(
                    params![invites_before, i64::try_from(limit).unwrap_or(i64::MAX)],
                    |r| r.get(0),
                )
                .context(fail)?;
            rows.collect::<Result<_, _>>().context(fail)?
        };
        for id in &ids {
            // Warnings, rejections and rescinds go by ON DELETE CASCADE; room state is in the
            // invite's row, and its PDUs go below once nothing refers to them.
            tx.execute("DELETE FROM invites WHERE event_id = ?1", params![id])
                .context(fail)?;
            tx.execute(
                "DELETE FROM outbox WHERE kind = 'rejection' AND subject = ?1",
                params![id],
            )
            .context(fail)?;
        }
        let pdus = if ids.is_empty() {
            0
        } else {
            tx.execute(ORPHAN_PDUS, []).context(fail)?
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let changes = tx
            .execute(
                &format!("DELETE FROM invite_changes WHERE cursor IN ({OLD_CHANGES} LIMIT ?2)"),
                params![invites_before, limit],
            )
            .context(fail)?;
        let notifications = tx
            .execute(
                &format!("DELETE FROM outbox WHERE id IN ({OLD_NOTIFICATIONS} LIMIT ?2)"),
                params![invites_before, limit],
            )
            .context(fail)?;
        tx.commit().context(fail)?;
        Ok(PruneCounts {
            invites: ids.len(),
            pdus,
            remote_keys: 0,
            changes,
            notifications,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_store;

    /// Finding orphaned PDUs reads the room-state entries once, not once per PDU: a correlated
    /// subquery over the unindexed `pdu_sha256` made a retention batch quadratic (136 s for
    /// 10,000 invites, with the write lock held).
    #[test]
    fn orphaned_pdus_are_found_in_one_pass() {
        let (_dir, store) = temp_store();
        let plan = |sql: &str, p: &[i64]| -> Vec<String> {
            store
                .query_all(
                    &format!("EXPLAIN QUERY PLAN {sql}"),
                    rusqlite::params_from_iter(p),
                    "the plan",
                    |r| r.get(3),
                )
                .unwrap()
        };
        for (sql, steps) in [
            (ORPHAN_PDUS, plan(ORPHAN_PDUS, &[])),
            (
                "the dry run's count",
                plan(&orphan_pdus_after_prune(), &[0]),
            ),
        ] {
            assert!(
                steps.iter().all(|step| !step.contains("CORRELATED")),
                "{sql}: {steps:?}"
            );
            assert!(
                steps.iter().any(|step| step.contains("LIST SUBQUERY")),
                "{sql}: {steps:?}"
            );
        }
    }
}

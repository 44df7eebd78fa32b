//! Keys: ours (public halves and their history) and other servers' (`our_keys`, `remote_keys`).

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Context, Store, StoreError};

/// One of our signing keys as the database records it (public half only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OurKey {
    pub key_id: String,
    pub public_key: String,
    pub created_ts: i64,
    /// `None` while current.
    pub expired_ts: Option<i64>,
}

/// Another server's key as the database records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteKeyRow {
    pub server_name: String,
    pub key_id: String,
    pub public_key: String,
    pub valid_until_ts: Option<i64>,
    pub expired_ts: Option<i64>,
    pub fetched_ts: i64,
    pub fetched_from: String,
}

impl Store {
    /// All our keys, current first, then retired ones newest first.
    pub fn our_keys(&self) -> Result<Vec<OurKey>, StoreError> {
        self.query_all(
            "SELECT key_id, public_key, created_ts, expired_ts FROM our_keys
             ORDER BY expired_ts IS NOT NULL, expired_ts DESC, created_ts DESC",
            [],
            "our keys",
            |r| {
                Ok(OurKey {
                    key_id: r.get(0)?,
                    public_key: r.get(1)?,
                    created_ts: r.get(2)?,
                    expired_ts: r.get(3)?,
                })
            },
        )
    }

    /// Records `key_id` as our current key and retires whichever key was current before
    /// (its `expired_ts` becomes `now_ms`), in one transaction.
    pub fn make_key_current(
        &mut self,
        key_id: &str,
        public_key: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(|| "cannot start a transaction".to_owned())?;
        let existing: Option<(String, Option<i64>)> = tx
            .query_row(
                "SELECT public_key, expired_ts FROM our_keys WHERE key_id = ?1",
                params![key_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .context(|| format!("cannot look up key {key_id}"))?;
        match existing {
            Some((public, None)) if public == public_key => return Ok(()),
            Some((public, _)) if public != public_key => {
                return Err(StoreError {
                    context: format!(
                        "key ID {key_id} is already recorded with a different public key; \
                         a key ID must never be reused"
                    ),
                    source: None,
                });
            }
            Some((_, Some(_))) => {
                return Err(StoreError {
                    context: format!(
                        "key {key_id} was retired; a retired key must not become current again"
                    ),
                    source: None,
                });
            }
            _ => {}
        }
        tx.execute(
            "UPDATE our_keys SET expired_ts = max(?1, created_ts) WHERE expired_ts IS NULL",
            params![now_ms],
        )
        .context(|| "cannot retire the current key".to_owned())?;
        tx.execute(
            "INSERT INTO our_keys (key_id, public_key, created_ts, expired_ts)
             VALUES (?1, ?2, ?3, NULL)",
            params![key_id, public_key, now_ms],
        )
        .context(|| format!("cannot record key {key_id}"))?;
        tx.commit()
            .context(|| "cannot commit the key change".to_owned())
    }

    /// Every key we know for `server`.
    pub fn remote_keys(&self, server: &str) -> Result<Vec<RemoteKeyRow>, StoreError> {
        self.query_all(
            "SELECT server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts,
                    fetched_from
             FROM remote_keys WHERE server_name = ?1",
            params![server],
            "remote keys",
            |r| {
                Ok(RemoteKeyRow {
                    server_name: r.get(0)?,
                    key_id: r.get(1)?,
                    public_key: r.get(2)?,
                    valid_until_ts: r.get(3)?,
                    expired_ts: r.get(4)?,
                    fetched_ts: r.get(5)?,
                    fetched_from: r.get(6)?,
                })
            },
        )
    }

    /// Deletes other servers' keys fetched before `fetched_before_ts`: a key still in use is
    /// fetched again when needed, and the table does not grow with every server ever seen.
    pub fn prune_remote_keys(&mut self, fetched_before_ts: i64) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "DELETE FROM remote_keys WHERE fetched_ts < ?1",
                params![fetched_before_ts],
            )
            .context(|| "cannot prune remote keys".to_owned())
    }

    /// Records keys from one fetched response, replacing what we had for those key IDs.
    pub fn save_remote_keys(&mut self, keys: &[RemoteKeyRow]) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(|| "cannot start a transaction".to_owned())?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO remote_keys (server_name, key_id, public_key, valid_until_ts,
                         expired_ts, fetched_ts, fetched_from)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (server_name, key_id) DO UPDATE SET
                         public_key = excluded.public_key,
                         valid_until_ts = excluded.valid_until_ts,
                         expired_ts = excluded.expired_ts,
                         fetched_ts = excluded.fetched_ts,
                         fetched_from = excluded.fetched_from",
                )
                .context(|| "cannot save remote keys".to_owned())?;
            for k in keys {
                stmt.execute(params![
                    k.server_name,
                    k.key_id,
                    k.public_key,
                    k.valid_until_ts,
                    k.expired_ts,
                    k.fetched_ts,
                    k.fetched_from
                ])
                .context(|| format!("cannot save key {} of {}", k.key_id, k.server_name))?;
            }
        }
        tx.commit()
            .context(|| "cannot commit remote keys".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::tests::temp_store;

    #[test]
    fn key_rotation_history() {
        let (_dir, mut store) = temp_store();
        store.make_key_current("ed25519:a", "AAA", 1000).unwrap();
        store.make_key_current("ed25519:a", "AAA", 1500).unwrap(); // idempotent
        store.make_key_current("ed25519:b", "BBB", 2000).unwrap();
        let keys = store.our_keys().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].key_id, "ed25519:b");
        assert_eq!(keys[0].expired_ts, None);
        assert_eq!(keys[1].key_id, "ed25519:a");
        assert_eq!(keys[1].expired_ts, Some(2000));
        assert!(store.make_key_current("ed25519:a", "AAA", 3000).is_err());
        assert!(store.make_key_current("ed25519:b", "CCC", 3000).is_err());
    }
}

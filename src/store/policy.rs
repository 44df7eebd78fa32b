//! Operator rules and switches, and local users' own invite settings (`policy_rules`,
//! `policy_settings`, `policy_version`, `local_users`).

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Context, Store, StoreError, text_enum};

text_enum! {
    /// What an operator rule's pattern is matched against (`policy_rules.kind`).
    pub enum RuleKind {
        /// Server names: the origin, the inviter's server and the room ID's server.
        Server = "server",
        /// Full user IDs: the inviter.
        User = "user",
    }
}

text_enum! {
    /// What an operator rule does when it matches (`policy_rules.action`).
    pub enum RuleAction {
        /// Refuse with 403 `M_FORBIDDEN`.
        Deny = "deny",
        /// In allow-list mode, only servers matching an allow rule may invite.
        Allow = "allow",
        /// Co-sign and answer as usual, store as `ignored`.
        Ignore = "ignore",
    }
}

text_enum! {
    /// The operator's on/off switches (`policy_settings.name`).
    pub enum Switch {
        /// Refuse every invite.
        RefuseAll = "refuse_all",
        /// Only servers matching an allow rule may invite.
        AllowListMode = "allow_list_mode",
        /// Only invitees listed in `local_users`.
        KnownUsersOnly = "known_users_only",
    }
}

text_enum! {
    /// A local user's invite settings: the columns of `local_users`, each holding the JSON a
    /// client sets as account data.
    pub enum UserSetting {
        /// `m.invite_permission_config` (spec v1.18, MSC4380).
        InvitePermissionConfig = "invite_permission_config",
        /// `org.matrix.msc4155.invite_permission_config` (MSC4155).
        Msc4155Config = "msc4155_config",
        /// `m.ignored_user_list`.
        IgnoredUserList = "ignored_user_list",
    }
}

/// An operator rule (table `policy_rules`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRule {
    pub kind: RuleKind,
    pub pattern: String,
    pub action: RuleAction,
    /// `config` for rules from the config file (replaced at each start); `cli` or anything
    /// else for rules added later.
    pub source: String,
}

/// A local user's invite settings (table `local_users`), JSON texts as clients set them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSettings {
    pub invite_permission_config: Option<String>,
    pub msc4155_config: Option<String>,
    pub ignored_user_list: Option<String>,
}

impl Store {
    /// The counter the policy triggers bump on every rule or setting change.
    pub fn policy_version(&self) -> Result<i64, StoreError> {
        self.conn
            .prepare_cached("SELECT version FROM policy_version WHERE id = 1")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .context(|| "cannot read the policy version".to_owned())
    }

    pub fn policy_rules(&self) -> Result<Vec<PolicyRule>, StoreError> {
        self.query_all(
            "SELECT kind, pattern, action, source FROM policy_rules ORDER BY kind, action, pattern",
            [],
            "policy rules",
            |r| {
                Ok(PolicyRule {
                    kind: r.get(0)?,
                    pattern: r.get(1)?,
                    action: r.get(2)?,
                    source: r.get(3)?,
                })
            },
        )
    }

    /// Adds a rule (no-op if it exists).
    pub fn add_policy_rule(&mut self, rule: &PolicyRule, now_ms: i64) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute(
                "INSERT INTO policy_rules (kind, pattern, action, source, created_ts)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                params![rule.kind, rule.pattern, rule.action, rule.source, now_ms],
            )
            .context(|| format!("cannot add rule {}", rule.pattern))?;
        Ok(n == 1)
    }

    /// Removes every rule with this pattern (any kind and action); returns how many.
    pub fn remove_policy_rules(&mut self, pattern: &str) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "DELETE FROM policy_rules WHERE pattern = ?1",
                params![pattern],
            )
            .context(|| format!("cannot remove rules for {pattern}"))
    }

    /// Replaces the rules that came from the config file.
    pub fn replace_config_rules(
        &mut self,
        rules: &[PolicyRule],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(|| "cannot start a transaction".to_owned())?;
        tx.execute("DELETE FROM policy_rules WHERE source = 'config'", [])
            .context(|| "cannot replace config rules".to_owned())?;
        for r in rules {
            tx.execute(
                "INSERT INTO policy_rules (kind, pattern, action, source, created_ts)
                 VALUES (?1, ?2, ?3, 'config', ?4) ON CONFLICT DO NOTHING",
                params![r.kind, r.pattern, r.action, now_ms],
            )
            .context(|| "cannot replace config rules".to_owned())?;
        }
        tx.commit()
            .context(|| "cannot replace config rules".to_owned())
    }

    /// Switches set in the database (absent ones fall back to the config file).
    pub fn policy_settings(&self) -> Result<Vec<(Switch, bool)>, StoreError> {
        self.query_all(
            "SELECT name, value FROM policy_settings",
            [],
            "policy settings",
            |r| Ok((r.get::<_, Switch>(0)?, r.get::<_, String>(1)? == "true")),
        )
    }

    /// Sets a switch, or with `None` removes it (back to the config file's value).
    pub fn set_policy_setting(
        &mut self,
        switch: Switch,
        value: Option<bool>,
    ) -> Result<(), StoreError> {
        match value {
            Some(v) => self.conn.execute(
                "INSERT INTO policy_settings (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![switch, if v { "true" } else { "false" }],
            ),
            None => self.conn.execute(
                "DELETE FROM policy_settings WHERE name = ?1",
                params![switch],
            ),
        }
        .map(|_| ())
        .context(|| format!("cannot set {switch}"))
    }

    /// A local user's settings; `None` if the user is not in `local_users`.
    pub fn user_settings(&self, user_id: &str) -> Result<Option<UserSettings>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT invite_permission_config, msc4155_config, ignored_user_list
                 FROM local_users WHERE user_id = ?1",
            )
            .and_then(|mut s| {
                s.query_row(params![user_id], |r| {
                    Ok(UserSettings {
                        invite_permission_config: r.get(0)?,
                        msc4155_config: r.get(1)?,
                        ignored_user_list: r.get(2)?,
                    })
                })
                .optional()
            })
            .context(|| format!("cannot read settings of {user_id}"))
    }

    /// Adds a local user (keeping existing settings).
    pub fn add_local_user(&mut self, user_id: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO local_users (user_id) VALUES (?1) ON CONFLICT DO NOTHING",
                params![user_id],
            )
            .map(|_| ())
            .context(|| format!("cannot add {user_id}"))
    }

    /// Sets one of a user's invite settings to JSON text or NULL, adding the user if needed.
    pub fn set_user_setting(
        &mut self,
        user_id: &str,
        setting: UserSetting,
        json: Option<&str>,
    ) -> Result<(), StoreError> {
        let sql = match setting {
            UserSetting::InvitePermissionConfig => {
                "INSERT INTO local_users (user_id, invite_permission_config) VALUES (?1, ?2)
                 ON CONFLICT (user_id) DO UPDATE SET invite_permission_config = excluded.invite_permission_config"
            }
            UserSetting::Msc4155Config => {
                "INSERT INTO local_users (user_id, msc4155_config) VALUES (?1, ?2)
                 ON CONFLICT (user_id) DO UPDATE SET msc4155_config = excluded.msc4155_config"
            }
            UserSetting::IgnoredUserList => {
                "INSERT INTO local_users (user_id, ignored_user_list) VALUES (?1, ?2)
                 ON CONFLICT (user_id) DO UPDATE SET ignored_user_list = excluded.ignored_user_list"
            }
        };
        self.conn
            .execute(sql, params![user_id, json])
            .map(|_| ())
            .context(|| format!("cannot set {setting} of {user_id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_store;

    /// Tables print these with widths.
    #[test]
    fn names_pad_like_strings() {
        assert_eq!(format!("[{:<7}]", RuleKind::User), "[user   ]");
        assert_eq!(format!("[{:>6}]", RuleAction::Deny), "[  deny]");
    }

    /// Each enum and its schema CHECK list name the same values.
    #[test]
    fn every_name_is_allowed_by_the_schema() {
        let (_dir, mut store) = temp_store();
        for kind in RuleKind::ALL {
            for action in RuleAction::ALL {
                let rule = PolicyRule {
                    kind: *kind,
                    pattern: "*.example".into(),
                    action: *action,
                    source: "cli".into(),
                };
                assert!(store.add_policy_rule(&rule, 1).unwrap());
            }
        }
        let rules = store.policy_rules().unwrap();
        assert_eq!(rules.len(), RuleKind::ALL.len() * RuleAction::ALL.len());
        for switch in Switch::ALL {
            store.set_policy_setting(*switch, Some(true)).unwrap();
        }
        assert_eq!(store.policy_settings().unwrap().len(), Switch::ALL.len());
        for setting in UserSetting::ALL {
            store
                .set_user_setting("@u:us", *setting, Some("{}"))
                .unwrap();
        }
        let u = store.user_settings("@u:us").unwrap().unwrap();
        assert_eq!(
            (
                u.invite_permission_config,
                u.msc4155_config,
                u.ignored_user_list
            ),
            (Some("{}".into()), Some("{}".into()), Some("{}".into()))
        );
    }
}

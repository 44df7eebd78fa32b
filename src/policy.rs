//! Invite policy: who may invite our users, and how fast. Runs after an invite is proven
//! authentic and well-formed (pipeline step 8) and before we sign.
//!
//! Order, first match wins: refuse-all; operator deny rules (servers, users); allow-list
//! mode; known-users-only; operator ignore rules; the invitee's own settings (spec/MSC4380
//! `default_action: "block"`, `m.ignored_user_list`, MSC4155 lists in the MSC's order); rate
//! limits. "Ignore" co-signs and answers 200 as usual but stores the invite as `ignored`, so
//! a spammer learns nothing.
//!
//! Rules live in the database so the CLI and the hosting homeserver can change them while we
//! run; a trigger bumps `policy_version`, and we reload our snapshot when it moved.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use invited_matrix::glob::{server_glob_match, user_glob_match};
use invited_matrix::invitee_settings::{InviteeSettings, InviteeVerdict, invitee_verdict};
use invited_matrix::{ErrCode, RoomId, ServerName, UserId, Value};

use crate::config::PolicyConfig;
use crate::error::{MatrixError, Refusal, RefusalKind};
use crate::rate_limit::TokenBuckets;
use crate::store::{PolicyRule, RuleAction, RuleKind, StoreError, StorePool, Switch, UserSettings};

/// The facts of an invite that policy decides on (all already checked).
pub struct InviteFacts<'a> {
    pub origin: &'a ServerName,
    pub sender: &'a UserId,
    pub invitee: &'a UserId,
    pub room_id: &'a RoomId,
}

/// What policy says about an invite that is not refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept,
    /// Co-sign and answer as usual, store as `ignored`; the string names the rule.
    Ignore(String),
}

fn forbidden(kind: RefusalKind, rule: String, message: &str) -> Refusal {
    Refusal::new(kind, MatrixError::new(ErrCode::Forbidden, message), rule)
}

fn blocked(rule: String) -> Refusal {
    Refusal::new(
        RefusalKind::InviteeSettings,
        MatrixError::new(
            ErrCode::InviteBlocked,
            "The invited user does not accept invites from you",
        ),
        rule,
    )
}

/// Rules and switches as of one `policy_version`.
#[derive(Debug, Default)]
struct Snapshot {
    version: i64,
    rules: Vec<PolicyRule>,
    refuse_all: bool,
    allow_list_mode: bool,
    known_users_only: bool,
}

/// The policy engine: a rule snapshot and the rate limiters.
pub struct Policy {
    defaults: PolicyConfig,
    snapshot: Mutex<Arc<Snapshot>>,
    per_origin: Mutex<TokenBuckets>,
    per_invitee: Mutex<TokenBuckets>,
    /// All origins together (one bucket): our capacity, not a sender's fault.
    total: Mutex<TokenBuckets>,
}

impl Policy {
    pub fn new(defaults: PolicyConfig) -> Policy {
        let per_origin =
            TokenBuckets::new(defaults.per_origin_per_second, defaults.per_origin_burst);
        let per_invitee =
            TokenBuckets::new(defaults.per_invitee_per_second, defaults.per_invitee_burst);
        let total = TokenBuckets::new(defaults.total_per_second, defaults.total_burst);
        Policy {
            defaults,
            snapshot: Mutex::new(Arc::new(Snapshot {
                version: -1,
                ..Snapshot::default()
            })),
            per_origin: Mutex::new(per_origin),
            per_invitee: Mutex::new(per_invitee),
            total: Mutex::new(total),
        }
    }

    fn current(&self, store: &StorePool) -> Result<Arc<Snapshot>, StoreError> {
        let version = store.with(|s| s.policy_version())?;
        let cached = self.snapshot.lock().map(|s| s.clone()).ok();
        if let Some(s) = cached.filter(|s| s.version == version) {
            return Ok(s);
        }
        let (rules, settings) = store.with(|s| Ok((s.policy_rules()?, s.policy_settings()?)))?;
        let setting = |switch: Switch, default: bool| {
            settings
                .iter()
                .find(|(s, _)| *s == switch)
                .map_or(default, |(_, v)| *v)
        };
        let fresh = Arc::new(Snapshot {
            version,
            rules,
            refuse_all: setting(Switch::RefuseAll, self.defaults.refuse_all),
            allow_list_mode: setting(Switch::AllowListMode, self.defaults.allow_list_mode),
            known_users_only: setting(Switch::KnownUsersOnly, self.defaults.known_users_only),
        });
        if let Ok(mut s) = self.snapshot.lock() {
            *s = fresh.clone();
        }
        Ok(fresh)
    }

    /// Decides on a new invite, before its signatures are checked: rules, switches, the
    /// invitee's settings, and whether the rate limits leave room (nothing is charged yet:
    /// see [`Policy::charge`]). Cheap, so a refused invite costs no key fetch. Retries of
    /// answered invites never get here, so they are never charged.
    pub fn evaluate(
        &self,
        store: &StorePool,
        facts: &InviteFacts<'_>,
    ) -> Result<Decision, Refusal> {
        let internal = |e: StoreError| {
            log::error!("policy: {e}");
            Refusal::new(
                RefusalKind::Internal,
                MatrixError::internal(),
                "internal error",
            )
        };
        let snap = self.current(store).map_err(internal)?;
        if snap.refuse_all {
            return Err(forbidden(
                RefusalKind::RefuseAll,
                "refuse_all".into(),
                "This server does not accept invites",
            ));
        }
        let mut servers = vec![facts.origin.as_str(), facts.sender.server_str()];
        if let Some(room_server) = facts.room_id.server_str() {
            servers.push(room_server);
        }
        let sender = facts.sender.as_str();
        let matching = |action: RuleAction| {
            snap.rules
                .iter()
                .filter(move |r| r.action == action)
                .find(|r| match r.kind {
                    RuleKind::Server => servers.iter().any(|s| server_glob_match(&r.pattern, s)),
                    RuleKind::User => user_glob_match(&r.pattern, sender),
                })
        };
        if let Some(r) = matching(RuleAction::Deny) {
            return Err(forbidden(
                RefusalKind::Deny,
                format!("{} deny {}", r.kind, r.pattern),
                "This server does not accept invites from you",
            ));
        }
        if snap.allow_list_mode {
            let allowed = |s: &str| {
                snap.rules.iter().any(|r| {
                    r.kind == RuleKind::Server
                        && r.action == RuleAction::Allow
                        && server_glob_match(&r.pattern, s)
                })
            };
            if let Some(s) = servers.iter().find(|s| !allowed(s)) {
                return Err(forbidden(
                    RefusalKind::AllowList,
                    format!("allow_list_mode: {s} not allowed"),
                    "This server only accepts invites from servers it allows",
                ));
            }
        }
        let user = store
            .with(|s| s.user_settings(facts.invitee.as_str()))
            .map_err(internal)?;
        if snap.known_users_only && user.is_none() {
            return Err(forbidden(
                RefusalKind::KnownUsers,
                "known_users_only".into(),
                "No such user on this server",
            ));
        }
        if let Some(r) = matching(RuleAction::Ignore) {
            return Ok(Decision::Ignore(format!("{} ignore {}", r.kind, r.pattern)));
        }
        if let Some(user) = &user
            && let Some(d) = user_decision(user, facts.sender)?
        {
            return Ok(d);
        }
        self.rate_limits(facts, |buckets, key, now| buckets.check(key, now))?;
        Ok(Decision::Accept)
    }

    /// Charges an invite that passed [`Policy::evaluate`] and its signature checks against
    /// the rate limits (429 if concurrent invites took the room meanwhile).
    pub fn charge(&self, facts: &InviteFacts<'_>) -> Result<(), Refusal> {
        self.rate_limits(facts, |buckets, key, now| buckets.take(key, now))
    }

    fn rate_limits(
        &self,
        facts: &InviteFacts<'_>,
        step: impl Fn(&mut TokenBuckets, &str, Instant) -> Result<(), i64>,
    ) -> Result<(), Refusal> {
        let now = Instant::now();
        let overall = self
            .total
            .lock()
            .map(|mut b| step(&mut b, "", now))
            .unwrap_or(Ok(()));
        if let Err(retry_after_ms) = overall {
            let error = MatrixError::unavailable(
                "This server is taking no more invites right now; try again shortly",
                retry_after_secs(retry_after_ms),
            );
            return Err(Refusal::new(
                RefusalKind::RateLimit,
                error,
                "rate limit over all origins",
            ));
        }
        for (buckets, key, what) in [
            (&self.per_origin, facts.origin.as_str(), "origin"),
            (&self.per_invitee, facts.invitee.as_str(), "invitee"),
        ] {
            let verdict = buckets
                .lock()
                .map(|mut b| step(&mut b, key, now))
                .unwrap_or(Ok(()));
            if let Err(retry_after_ms) = verdict {
                let mut error = MatrixError::new(ErrCode::LimitExceeded, "Too many invites")
                    .with("retry_after_ms", Value::int(retry_after_ms));
                error.retry_after_secs = Some(retry_after_secs(retry_after_ms));
                return Err(Refusal::new(
                    RefusalKind::RateLimit,
                    error,
                    format!("rate limit per {what}"),
                ));
            }
        }
        Ok(())
    }
}

/// `Retry-After` for a wait in milliseconds: whole seconds, rounded up.
fn retry_after_secs(ms: i64) -> u64 {
    ms.div_euclid(1000).saturating_add(1).unsigned_abs()
}

/// The invitee's own settings (MSC4380, `m.ignored_user_list`, MSC4155: the rules are the
/// pure crate's). `Ok(None)`: no opinion (accept).
fn user_decision(user: &UserSettings, sender: &UserId) -> Result<Option<Decision>, Refusal> {
    let settings = InviteeSettings {
        invite_permission_config: user.invite_permission_config.as_deref(),
        ignored_user_list: user.ignored_user_list.as_deref(),
        msc4155_config: user.msc4155_config.as_deref(),
    };
    match invitee_verdict(&settings, sender) {
        InviteeVerdict::NoOpinion => Ok(None),
        InviteeVerdict::Ignore(rule) => Ok(Some(Decision::Ignore(rule))),
        InviteeVerdict::Block(rule) => Err(blocked(rule)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(msc4155: &str) -> UserSettings {
        UserSettings {
            invite_permission_config: None,
            msc4155_config: Some(msc4155.to_owned()),
            ignored_user_list: None,
        }
    }

    #[test]
    fn msc4155_order() {
        let sender = UserId::parse("@goodguy:badguys.org").unwrap();
        let other = UserId::parse("@x:badguys.org").unwrap();
        let cfg =
            user(r#"{"allowed_users":["@goodguy:badguys.org"],"blocked_servers":["badguys.org"]}"#);
        assert_eq!(user_decision(&cfg, &sender), Ok(None));
        assert!(user_decision(&cfg, &other).is_err());
        let cfg = user(r#"{"ignored_servers":["badguys.org"],"blocked_servers":["*"]}"#);
        assert!(matches!(
            user_decision(&cfg, &other),
            Ok(Some(Decision::Ignore(_)))
        ));
        let cfg = user(r#"{"enabled":false,"blocked_servers":["*"]}"#);
        assert_eq!(user_decision(&cfg, &other), Ok(None));
        let block_all = UserSettings {
            invite_permission_config: Some(r#"{"default_action":"block"}"#.into()),
            msc4155_config: None,
            ignored_user_list: None,
        };
        let refusal = user_decision(&block_all, &sender).unwrap_err();
        assert_eq!(
            (refusal.error.status(), refusal.error.errcode()),
            (403, "M_INVITE_BLOCKED")
        );
    }
}

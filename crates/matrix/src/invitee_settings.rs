//! What an invitee's own account data says about an invite from a given sender.
//!
//! Three settings, applied in this order, first opinion wins:
//! 1. `m.invite_permission_config` with `default_action: "block"` blocks every invite (spec
//!    v1.18, MSC4380: <https://github.com/matrix-org/matrix-spec-proposals/pull/4380>).
//! 2. `m.ignored_user_list` ignores invites from the users it lists
//!    (<https://spec.matrix.org/v1.16/client-server-api/#ignoring-users>); MSC4155 builds on it,
//!    so it comes first.
//! 3. MSC4155 invite filtering
//!    (<https://github.com/matrix-org/matrix-spec-proposals/pull/4155>): glob lists of allowed,
//!    ignored and blocked users, then of allowed, ignored and blocked servers; `enabled: false`
//!    turns the whole config off.
//!
//! Settings that are not JSON, or not of the expected shape, are no opinion: a user's broken
//! account data must not make their invites fail.

use crate::glob::{server_glob_match, user_glob_match};
use crate::ids::UserId;
use crate::json::{self, Value};

/// The invitee's settings as stored: the JSON text of each account data event's `content`,
/// `None` when the user has none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InviteeSettings<'a> {
    /// `m.invite_permission_config` (spec v1.18 / MSC4380).
    pub invite_permission_config: Option<&'a str>,
    /// `m.ignored_user_list`.
    pub ignored_user_list: Option<&'a str>,
    /// MSC4155's invite permission config.
    pub msc4155_config: Option<&'a str>,
}

/// What the invitee's settings say; the string names the rule, for the refusal log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InviteeVerdict {
    /// Nothing against the invite (or an MSC4155 allow list matched).
    NoOpinion,
    /// Accept the invite as usual but keep it from the invitee: the sender learns nothing.
    Ignore(String),
    /// Refuse the invite (403 `M_INVITE_BLOCKED`).
    Block(String),
}

/// What one MSC4155 list does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msc4155Action {
    Allow,
    Ignore,
    Block,
}

/// The MSC4155 lists in evaluation order: each with what it matches against (the user ID, or
/// the sender's server name) and its action.
const MSC4155_LISTS: [(&str, Subject, Msc4155Action); 6] = [
    ("allowed_users", Subject::User, Msc4155Action::Allow),
    ("ignored_users", Subject::User, Msc4155Action::Ignore),
    ("blocked_users", Subject::User, Msc4155Action::Block),
    ("allowed_servers", Subject::Server, Msc4155Action::Allow),
    ("ignored_servers", Subject::Server, Msc4155Action::Ignore),
    ("blocked_servers", Subject::Server, Msc4155Action::Block),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    User,
    Server,
}

/// Evaluates the invitee's settings for an invite from `sender`.
pub fn invitee_verdict(settings: &InviteeSettings<'_>, sender: &UserId) -> InviteeVerdict {
    let parse = |text: Option<&str>| text.and_then(|t| json::parse(t).ok());
    if let Some(config) = parse(settings.invite_permission_config)
        && config.get("default_action").and_then(Value::as_str) == Some("block")
    {
        return InviteeVerdict::Block(
            "invitee invite_permission_config default_action block".to_owned(),
        );
    }
    if let Some(list) = parse(settings.ignored_user_list)
        && list
            .get("ignored_users")
            .and_then(|u| u.get(sender.as_str()))
            .is_some()
    {
        return InviteeVerdict::Ignore("invitee ignored_user_list".to_owned());
    }
    match parse(settings.msc4155_config) {
        Some(config) => msc4155_verdict(&config, sender),
        None => InviteeVerdict::NoOpinion,
    }
}

/// MSC4155: the first list that matches decides.
fn msc4155_verdict(config: &Value, sender: &UserId) -> InviteeVerdict {
    if config.get("enabled").and_then(Value::as_bool) == Some(false) {
        return InviteeVerdict::NoOpinion;
    }
    // Server lists match as Synapse's do: case-insensitively, port included when the entry
    // names one (see `server_glob_match`); user lists fold the user ID's server part.
    let server = sender.server_str();
    let matches = |list: &str, subject: Subject| {
        let globs = config
            .get(list)
            .and_then(Value::as_array)
            .unwrap_or_default();
        globs
            .iter()
            .filter_map(Value::as_str)
            .any(|glob| match subject {
                Subject::User => user_glob_match(glob, sender.as_str()),
                Subject::Server => server_glob_match(glob, server),
            })
    };
    let found = MSC4155_LISTS
        .iter()
        .find(|(list, subject, _)| matches(list, *subject));
    match found {
        None | Some((_, _, Msc4155Action::Allow)) => InviteeVerdict::NoOpinion,
        Some((list, _, Msc4155Action::Ignore)) => {
            InviteeVerdict::Ignore(format!("invitee msc4155 {list}"))
        }
        Some((list, _, Msc4155Action::Block)) => {
            InviteeVerdict::Block(format!("invitee msc4155 {list}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InviteeVerdict::*;

    fn msc4155(config: &str) -> InviteeSettings<'_> {
        InviteeSettings {
            msc4155_config: Some(config),
            ..InviteeSettings::default()
        }
    }

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    /// Ported from src/policy.rs.
    #[test]
    fn msc4155_order() {
        let sender = user("@goodguy:badguys.org");
        let other = user("@x:badguys.org");
        let cfg = msc4155(
            r#"{"allowed_users":["@goodguy:badguys.org"],"blocked_servers":["badguys.org"]}"#,
        );
        assert_eq!(invitee_verdict(&cfg, &sender), NoOpinion);
        assert_eq!(
            invitee_verdict(&cfg, &other),
            Block("invitee msc4155 blocked_servers".into())
        );
        let cfg = msc4155(r#"{"ignored_servers":["badguys.org"],"blocked_servers":["*"]}"#);
        assert_eq!(
            invitee_verdict(&cfg, &other),
            Ignore("invitee msc4155 ignored_servers".into())
        );
        let cfg = msc4155(r#"{"enabled":false,"blocked_servers":["*"]}"#);
        assert_eq!(invitee_verdict(&cfg, &other), NoOpinion);
        let block_all = InviteeSettings {
            invite_permission_config: Some(r#"{"default_action":"block"}"#),
            ..InviteeSettings::default()
        };
        assert_eq!(
            invitee_verdict(&block_all, &sender),
            Block("invitee invite_permission_config default_action block".into())
        );
    }

    /// The MSC's own examples.
    #[test]
    fn msc4155_examples() {
        let good = user("@john:goodguys.org");
        let bad = user("@eve:badguys.org");
        let really_bad = user("@mallory:reallybadguys.org");
        let verdicts = |config: &str| {
            let cfg = msc4155(config);
            [&good, &bad, &really_bad].map(|u| invitee_verdict(&cfg, u))
        };
        let block = |list: &str| Block(format!("invitee msc4155 {list}"));
        // Invites from everyone.
        assert_eq!(verdicts("{}"), [NoOpinion, NoOpinion, NoOpinion]);
        // No invites at all.
        let none = r#"{"blocked_servers":["*"]}"#;
        assert_eq!(verdicts(none), [(); 3].map(|_| block("blocked_servers")));
        // Only invites from goodguys.org.
        assert_eq!(
            verdicts(r#"{"allowed_servers":["goodguys.org"],"blocked_servers":["*"]}"#),
            [
                NoOpinion,
                block("blocked_servers"),
                block("blocked_servers")
            ]
        );
        // Invites from everyone except badguys.org.
        assert_eq!(
            verdicts(r#"{"blocked_servers":["badguys.org"]}"#),
            [NoOpinion, block("blocked_servers"), NoOpinion]
        );
        // Only goodguys.org, and no feedback to reallybadguys.org.
        assert_eq!(
            verdicts(
                r#"{"allowed_servers":["goodguys.org"],"ignored_servers":["reallybadguys.org"],
                    "blocked_servers":["*"]}"#
            ),
            [
                NoOpinion,
                block("blocked_servers"),
                Ignore("invitee msc4155 ignored_servers".into())
            ]
        );
    }

    #[test]
    fn users_before_servers_and_allow_before_ignore_before_block() {
        let eve = user("@eve:Bad.Example:8448");
        let cfg = |c: &str| invitee_verdict(&msc4155(c), &eve);
        assert_eq!(
            cfg(r#"{"ignored_users":["@eve:*"],"blocked_users":["@eve:*"]}"#),
            Ignore("invitee msc4155 ignored_users".into())
        );
        assert_eq!(
            cfg(r#"{"blocked_users":["@eve:*"],"allowed_servers":["*"]}"#),
            Block("invitee msc4155 blocked_users".into())
        );
        assert_eq!(
            cfg(r#"{"allowed_users":["@*"],"blocked_users":["@eve:*"]}"#),
            NoOpinion
        );
        // Server globs: case-insensitive; without a port, any port of the host; with one,
        // that port only (as Synapse matches them).
        assert_eq!(
            cfg(r#"{"blocked_servers":["BAD.example"]}"#),
            Block("invitee msc4155 blocked_servers".into())
        );
        assert_eq!(
            cfg(r#"{"blocked_servers":["bad.example:8448"]}"#),
            Block("invitee msc4155 blocked_servers".into())
        );
        assert_eq!(cfg(r#"{"blocked_servers":["bad.example:443"]}"#), NoOpinion);
        // User globs: the localpart exactly, the server part (a DNS name, port included)
        // case-insensitively.
        assert_eq!(
            cfg(r#"{"blocked_users":["@eve:bad.example:8448"]}"#),
            Block("invitee msc4155 blocked_users".into())
        );
        assert_eq!(
            cfg(r#"{"blocked_users":["@Eve:bad.example:8448"]}"#),
            NoOpinion
        );
        assert_eq!(
            cfg(r#"{"blocked_users":["@eve:Bad.Example:8448"]}"#),
            Block("invitee msc4155 blocked_users".into())
        );
        // Missing, null or non-array lists and non-string globs are nothing.
        assert_eq!(
            cfg(r#"{"allowed_users":null,"ignored_users":"@eve:*","blocked_users":[1,"@x:y"]}"#),
            NoOpinion
        );
        // Only `enabled: false` disables.
        assert_eq!(
            cfg(r#"{"enabled":true,"blocked_servers":["*"]}"#),
            Block("invitee msc4155 blocked_servers".into())
        );
        assert_eq!(
            cfg(r#"{"enabled":"false","blocked_servers":["*"]}"#),
            Block("invitee msc4155 blocked_servers".into())
        );
    }

    #[test]
    fn order_of_the_three_settings() {
        let eve = user("@eve:bad.example");
        let all = InviteeSettings {
            invite_permission_config: Some(r#"{"default_action":"block"}"#),
            ignored_user_list: Some(r#"{"ignored_users":{"@eve:bad.example":{}}}"#),
            msc4155_config: Some(r#"{"allowed_users":["*"]}"#),
        };
        assert!(matches!(invitee_verdict(&all, &eve), Block(_)));
        let no_block = InviteeSettings {
            invite_permission_config: Some(r#"{}"#),
            ..all
        };
        assert_eq!(
            invitee_verdict(&no_block, &eve),
            Ignore("invitee ignored_user_list".into())
        );
        let not_ignored = InviteeSettings {
            ignored_user_list: Some(r#"{"ignored_users":{"@other:bad.example":{}}}"#),
            msc4155_config: Some(r#"{"blocked_users":["*"]}"#),
            ..no_block
        };
        assert_eq!(
            invitee_verdict(&not_ignored, &eve),
            Block("invitee msc4155 blocked_users".into())
        );
        // Anything but "block" is no opinion; broken JSON is no opinion.
        let odd = InviteeSettings {
            invite_permission_config: Some(r#"{"default_action":"allow"}"#),
            ignored_user_list: Some("{not json"),
            msc4155_config: Some("[]"),
        };
        assert_eq!(invitee_verdict(&odd, &eve), NoOpinion);
        assert_eq!(
            invitee_verdict(&InviteeSettings::default(), &eve),
            NoOpinion
        );
    }
}

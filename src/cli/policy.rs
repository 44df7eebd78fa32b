//! `invited policy …`: the operator's server and user rules and switches, kept in the
//! database so they take effect on the next request without a restart.

use std::collections::BTreeMap;

use clap::Subcommand;
use serde::Serialize;

use super::json::print_json;
use super::with_existing_store;
use crate::config::{Config, PolicyConfig};
use crate::fatal::Error;
use crate::store::{PolicyRule, RuleAction, RuleKind, Store, Switch};
use crate::time::now_ms;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Refuse invites (403 M_FORBIDDEN) when the origin, the inviter's server or the room's
    /// server matches GLOB (e.g. '*.spam.example').
    DenyServer { glob: String },
    /// Allow servers matching GLOB (what allow-list mode lets through).
    AllowServer { glob: String },
    /// Silently drop invites from servers matching GLOB: answered 200, stored as ignored.
    IgnoreServer { glob: String },
    /// Refuse invites from users matching GLOB (full user IDs).
    DenyUser { glob: String },
    /// Silently drop invites from users matching GLOB.
    IgnoreUser { glob: String },
    /// Remove every rule with this exact GLOB.
    Remove { glob: String },
    /// Set a switch: refuse-all, allow-list-mode, known-users-only (on, off, or default to
    /// fall back to the config file).
    Set {
        #[arg(value_parser = ["refuse-all", "allow-list-mode", "known-users-only"])]
        switch: String,
        #[arg(value_parser = ["on", "off", "default"])]
        value: String,
    },
    /// Print the rules and switches.
    Show {
        #[arg(long)]
        json: bool,
    },
}

/// `policy show --json`. Fields in code-point order (see [`super::json`]).
#[derive(Serialize)]
struct ShownPolicy<'a> {
    rate_limits: RateLimits,
    rules: Vec<ShownRule<'a>>,
    /// Effective value of each switch, by its stored name (a map sorts its keys).
    switches: BTreeMap<&'static str, bool>,
}

/// The configured rate limits. The rates are floats and have always been printed as
/// strings (Rust's shortest form, e.g. "2.5"); canonical JSON has no floats.
#[derive(Serialize)]
struct RateLimits {
    per_invitee_burst: u32,
    per_invitee_per_second: String,
    per_origin_burst: u32,
    per_origin_per_second: String,
}

impl From<&PolicyConfig> for RateLimits {
    fn from(p: &PolicyConfig) -> Self {
        RateLimits {
            per_invitee_burst: p.per_invitee_burst,
            per_invitee_per_second: p.per_invitee_per_second.to_string(),
            per_origin_burst: p.per_origin_burst,
            per_origin_per_second: p.per_origin_per_second.to_string(),
        }
    }
}

#[derive(Serialize)]
struct ShownRule<'a> {
    action: &'static str,
    kind: &'static str,
    pattern: &'a str,
    source: &'a str,
}

impl<'a> From<&'a PolicyRule> for ShownRule<'a> {
    fn from(r: &'a PolicyRule) -> Self {
        ShownRule {
            action: r.action.as_str(),
            kind: r.kind.as_str(),
            pattern: &r.pattern,
            source: &r.source,
        }
    }
}

pub(super) fn run(config: &Config, command: PolicyCommand) -> Result<(), Error> {
    use RuleAction::{Allow, Deny, Ignore};
    use RuleKind::{Server, User};
    with_existing_store(config, |store| match command {
        PolicyCommand::DenyServer { glob } => add_rule(store, Server, Deny, glob),
        PolicyCommand::AllowServer { glob } => add_rule(store, Server, Allow, glob),
        PolicyCommand::IgnoreServer { glob } => add_rule(store, Server, Ignore, glob),
        PolicyCommand::DenyUser { glob } => add_rule(store, User, Deny, glob),
        PolicyCommand::IgnoreUser { glob } => add_rule(store, User, Ignore, glob),
        PolicyCommand::Remove { glob } => {
            let n = store.remove_policy_rules(&glob)?;
            if n == 0 {
                return Err(Error::new(format!("no rule with pattern {glob}")));
            }
            println!("removed {n} rule(s) for {glob}");
            Ok(())
        }
        PolicyCommand::Set { switch, value } => {
            let name = switch.replace('-', "_");
            let switch_value =
                Switch::parse(&name).ok_or_else(|| Error::new(format!("no switch {switch}")))?;
            let v = match value.as_str() {
                "on" => Some(true),
                "off" => Some(false),
                _ => None,
            };
            store.set_policy_setting(switch_value, v)?;
            println!("{switch} = {value}");
            Ok(())
        }
        PolicyCommand::Show { json } => show(store, &config.policy, json),
    })
}

/// Adds an operator rule (source `cli`); one that is there already is reported, not an error.
fn add_rule(
    store: &mut Store,
    kind: RuleKind,
    action: RuleAction,
    glob: String,
) -> Result<(), Error> {
    if glob.is_empty() || glob.contains(char::is_whitespace) {
        return Err(Error::new(format!("bad glob {glob:?}")));
    }
    let rule = PolicyRule {
        kind,
        pattern: glob,
        action,
        source: "cli".into(),
    };
    let added = store.add_policy_rule(&rule, now_ms())?;
    println!(
        "{} {} {} rule {}",
        if added { "added" } else { "already had" },
        rule.kind,
        rule.action,
        rule.pattern
    );
    Ok(())
}

/// The effective switches (database over config file), rate limits and rules.
fn show(store: &Store, p: &PolicyConfig, json: bool) -> Result<(), Error> {
    let rules = store.policy_rules()?;
    let settings = store.policy_settings()?;
    let effective = |switch: Switch, default: bool| {
        let set = settings.iter().find(|(s, _)| *s == switch);
        (switch.as_str(), set.map_or(default, |(_, v)| *v))
    };
    let switches = [
        effective(Switch::RefuseAll, p.refuse_all),
        effective(Switch::AllowListMode, p.allow_list_mode),
        effective(Switch::KnownUsersOnly, p.known_users_only),
    ];
    if json {
        print_json(&ShownPolicy {
            rate_limits: RateLimits::from(p),
            rules: rules.iter().map(ShownRule::from).collect(),
            switches: switches.into_iter().collect(),
        })?;
    } else {
        for (n, v) in switches {
            println!("{n}: {}", if v { "on" } else { "off" });
        }
        println!(
            "rate limits: {}/s (burst {}) per origin, {}/s (burst {}) per invitee",
            p.per_origin_per_second,
            p.per_origin_burst,
            p.per_invitee_per_second,
            p.per_invitee_burst
        );
        println!("{:<7} {:<7} {:<8} pattern", "kind", "action", "source");
        for r in rules {
            println!(
                "{:<7} {:<7} {:<8} {}",
                r.kind, r.action, r.source, r.pattern
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::json::tests::assert_canonical;
    use super::*;

    #[test]
    fn show_json_is_what_it_always_was() {
        let rules = [PolicyRule {
            kind: RuleKind::User,
            pattern: "@m:*".into(),
            action: RuleAction::Ignore,
            source: "cli".into(),
        }];
        let shown = ShownPolicy {
            rate_limits: RateLimits {
                per_invitee_burst: 3,
                per_invitee_per_second: 1.0f64.to_string(),
                per_origin_burst: 7,
                per_origin_per_second: 2.5f64.to_string(),
            },
            rules: rules.iter().map(ShownRule::from).collect(),
            switches: [
                (Switch::RefuseAll.as_str(), false),
                (Switch::AllowListMode.as_str(), true),
                (Switch::KnownUsersOnly.as_str(), true),
            ]
            .into_iter()
            .collect(),
        };
        assert_eq!(
            assert_canonical(&shown),
            concat!(
                r#"{"rate_limits":{"per_invitee_burst":3,"per_invitee_per_second":"1","#,
                r#""per_origin_burst":7,"per_origin_per_second":"2.5"},"#,
                r#""rules":[{"action":"ignore","kind":"user","pattern":"@m:*","source":"cli"}],"#,
                r#""switches":{"allow_list_mode":true,"known_users_only":true,"refuse_all":false}}"#
            )
        );
    }
}

//! [`Str`]: the text of a JSON string or object key, without an allocation for the words every
//! Matrix event repeats.
//!
//! A parsed event is mostly keys (`type`, `content`, `signatures`, `origin_server_ts`, …) and a
//! few stock values (`m.room.member`, `invite`). As `String`s each was an allocation of its
//! own, made by the parser and freed when the event was dropped: an invite request with four
//! room-state PDUs came to about 200 allocations, and parsing and dropping them was a tenth of
//! a worker's CPU under load. A [`Str`] that is one of the words in [`COMMON`] points at that
//! static text instead (that request: 106 allocations). Either way it is the same text:
//! equality and order are the `str`'s, so canonical key order is unchanged.

use std::cmp::Ordering;
use std::fmt;
use std::ops::Deref;

/// The text of a JSON string: a static common word, or owned text.
#[derive(Clone)]
pub struct Str(Repr);

#[derive(Clone)]
enum Repr {
    Common(&'static str),
    Owned(Box<str>),
}

/// Keys and values that the events we parse repeat (sorted, for the test that checks it):
/// event skeletons (PDU keys, hashes, signatures), membership and the room-state events an
/// invite carries. The room versions' IDs join them from the one table that names them.
const COMMON: &[&str] = &[
    "",
    "additional_creators",
    "age",
    "algorithm",
    "alias",
    "allow",
    "alt_aliases",
    "auth_events",
    "avatar_url",
    "ban",
    "body",
    "can_join",
    "content",
    "creator",
    "depth",
    "displayname",
    "event",
    "event_id",
    "events",
    "events_default",
    "forbidden",
    "guest_access",
    "hashes",
    "history_visibility",
    "invite",
    "invite_room_state",
    "invited",
    "is_direct",
    "join",
    "join_authorised_via_users_server",
    "join_rule",
    "joined",
    "kick",
    "knock",
    "knock_restricted",
    "leave",
    "m.federate",
    "m.megolm.v1.aes-sha2",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.create",
    "m.room.encryption",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
    "m.room.member",
    "m.room.name",
    "m.room.power_levels",
    "m.room.server_acl",
    "m.room.topic",
    "m.room_membership",
    "membership",
    "name",
    "notifications",
    "origin",
    "origin_server_ts",
    "predecessor",
    "prev_content",
    "prev_events",
    "prev_state",
    "private",
    "public",
    "reason",
    "redact",
    "redacts",
    "restricted",
    "room",
    "room_id",
    "room_version",
    "sender",
    "sha256",
    "shared",
    "signatures",
    "state_default",
    "state_key",
    "topic",
    "type",
    "unsigned",
    "url",
    "users",
    "users_default",
    "via",
    "world_readable",
];

impl Str {
    /// The text as a `&str`.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Common(s) => s,
            Repr::Owned(s) => s,
        }
    }

    /// The text as a `String` (a copy, unless it was owned).
    pub fn into_string(self) -> String {
        match self.0 {
            Repr::Common(s) => s.to_owned(),
            Repr::Owned(s) => s.into_string(),
        }
    }

    /// Whether the text has an allocation of its own.
    #[cfg(test)]
    fn is_allocated(&self) -> bool {
        matches!(self.0, Repr::Owned(_))
    }
}

/// The static copy of `s`, if it is a common word: one probe of an open-addressing table
/// keyed on the length and the first and last bytes, so a miss (most IDs, hashes and
/// signatures) costs a byte comparison or two, not a search.
fn common(s: &str) -> Option<&'static str> {
    let bytes = s.as_bytes();
    if bytes.len() > LONGEST {
        return None;
    }
    let table = TABLE.get_or_init(build_table);
    let mut slot = slot_of(bytes);
    loop {
        match table[slot] {
            None => return None,
            Some(word) if word.as_bytes() == bytes => return Some(word),
            Some(_) => slot = (slot + 1) % SLOTS,
        }
    }
}

/// Longer than this, nothing is a common word.
const LONGEST: usize = 32;
/// Slots in the table: a power of two, several times the number of words.
const SLOTS: usize = 512;
static TABLE: std::sync::OnceLock<[Option<&'static str>; SLOTS]> = std::sync::OnceLock::new();

fn slot_of(bytes: &[u8]) -> usize {
    let (first, last) = match bytes {
        [] => (0, 0),
        [one] => (*one, *one),
        [first, .., last] => (*first, *last),
    };
    (bytes.len() * 131 + usize::from(first) * 31 + usize::from(last) * 7) % SLOTS
}

/// Every common word: [`COMMON`] and the room versions' IDs.
fn words() -> impl Iterator<Item = &'static str> {
    let versions = crate::room_version::ROOM_VERSIONS.iter().map(|v| v.id);
    COMMON.iter().copied().chain(versions)
}

fn build_table() -> [Option<&'static str>; SLOTS] {
    let mut table = [None; SLOTS];
    for word in words() {
        let mut slot = slot_of(word.as_bytes());
        while table[slot].is_some() {
            slot = (slot + 1) % SLOTS;
        }
        table[slot] = Some(word);
    }
    table
}

impl From<&str> for Str {
    fn from(s: &str) -> Str {
        Str(match common(s) {
            Some(word) => Repr::Common(word),
            None => Repr::Owned(s.into()),
        })
    }
}

impl From<String> for Str {
    fn from(s: String) -> Str {
        Str(match common(&s) {
            Some(word) => Repr::Common(word),
            None => Repr::Owned(s.into_boxed_str()),
        })
    }
}

impl Deref for Str {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Str {
    fn eq(&self, other: &Str) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Str {}

impl PartialOrd for Str {
    fn partial_cmp(&self, other: &Str) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The `str` order: UTF-8 byte order, which is code-point order, the canonical key order.
impl Ord for Str {
    fn cmp(&self, other: &Str) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialEq<str> for Str {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Str {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_words_are_sorted_and_distinct() {
        assert!(
            COMMON.windows(2).all(|w| w[0] < w[1]),
            "COMMON must be sorted"
        );
        let all: Vec<&str> = words().collect();
        let distinct: std::collections::BTreeSet<&str> = all.iter().copied().collect();
        assert_eq!(distinct.len(), all.len(), "no word twice");
        assert!(all.iter().all(|w| w.len() <= LONGEST));
        assert!(all.len() * 4 <= SLOTS, "the table stays sparse");
    }

    #[test]
    fn common_words_share_their_text_and_others_own_theirs() {
        for word in words() {
            let s = Str::from(word);
            assert!(!s.is_allocated(), "{word}");
            assert_eq!(s.as_str(), word);
            assert_eq!(Str::from(word.to_string()), s);
        }
        for other in ["Type", "types", "m.room.membe", "ed25519:a", "13", "é"] {
            let s = Str::from(other);
            assert!(s.is_allocated(), "{other}");
            assert_eq!(s, other);
            assert_eq!(s.clone().into_string(), other);
        }
    }

    #[test]
    fn order_and_equality_are_the_texts_whichever_the_storage() {
        let words = [
            "",
            "a",
            "content",
            "contents",
            "type",
            "z",
            "é",
            "\u{10000}",
        ];
        for a in words {
            for b in words {
                let (sa, sb) = (Str::from(a), Str::from(b));
                assert_eq!(sa.cmp(&sb), a.cmp(b), "{a:?} {b:?}");
                assert_eq!(sa == sb, a == b);
            }
        }
    }
}

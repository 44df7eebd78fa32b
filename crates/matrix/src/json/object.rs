//! [`Object`]: a JSON object as one vector of members sorted by key.
//!
//! Sorted by `str`'s order, which is UTF-8 byte order, which is code-point order: the
//! canonical JSON key order, so iterating is encoding. A vector, not a B-tree: Matrix objects
//! hold a handful of keys (`hashes`, `signatures` and its one server, `content`), and a
//! `BTreeMap` spends a 640-byte node on each of them — ten times the text they came from, which
//! let an unauthenticated body of small objects cost ~70 MB to parse. Here a member costs its
//! slot (56 bytes) and lookups are binary searches. The API is the part of `BTreeMap`'s that
//! the project uses, with the same meaning (`insert` replaces and returns the old value).

use super::{Str, Value};

/// A JSON object with keys in canonical (code-point) order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Object {
    members: Vec<(Str, Value)>,
}

impl Object {
    pub const fn new() -> Object {
        Object {
            members: Vec::new(),
        }
    }

    pub fn with_capacity(n: usize) -> Object {
        Object {
            members: Vec::with_capacity(n),
        }
    }

    /// Takes members already sorted by key with no key twice (the parser checks both).
    pub(super) fn from_sorted(members: Vec<(Str, Value)>) -> Object {
        debug_assert!(members.windows(2).all(|w| w[0].0 < w[1].0));
        Object { members }
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.members.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.find(key).ok().map(|i| &self.members[i].1)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.find(key).ok().map(|i| &mut self.members[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sets `key` to `value`; returns the value it replaced, if any.
    pub fn insert(&mut self, key: String, value: Value) -> Option<Value> {
        self.insert_str(Str::from(key), value)
    }

    /// [`Object::insert`] for a key that is a [`Str`] already (one of another object's).
    pub fn insert_str(&mut self, key: Str, value: Value) -> Option<Value> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.members[i].1, value)),
            Err(i) => {
                self.members.insert(i, (key, value));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.find(key).ok().map(|i| self.members.remove(i).1)
    }

    /// The value at `key`, inserted from `make` when missing.
    pub fn get_or_insert_with(&mut self, key: &str, make: impl FnOnce() -> Value) -> &mut Value {
        let i = match self.find(key) {
            Ok(i) => i,
            Err(i) => {
                self.members.insert(i, (key.into(), make()));
                i
            }
        };
        &mut self.members[i].1
    }

    /// Members in key order.
    pub fn iter(&self) -> Iter<'_> {
        Iter(self.members.iter())
    }

    pub fn keys(&self) -> impl Iterator<Item = &Str> + '_ {
        self.members.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &Value> + '_ {
        self.members.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Value> + '_ {
        self.members.iter_mut().map(|(_, v)| v)
    }

    /// Keeps the members for which `keep` says so.
    pub fn retain(&mut self, mut keep: impl FnMut(&Str, &mut Value) -> bool) {
        self.members.retain_mut(|(k, v)| keep(k, v));
    }
}

/// `object["key"]`, as for `BTreeMap`: panics when the key is missing (for tests; product code
/// uses [`Object::get`]).
impl std::ops::Index<&str> for Object {
    type Output = Value;

    fn index(&self, key: &str) -> &Value {
        match self.get(key) {
            Some(v) => v,
            None => panic!("no member {key:?} in the object"),
        }
    }
}

/// Iterator over `(&key, &value)` in key order.
#[derive(Debug, Clone)]
pub struct Iter<'a>(std::slice::Iter<'a, (Str, Value)>);

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a Str, &'a Value);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(k, v)| (k, v))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(|(k, v)| (k, v))
    }
}

impl<'a> IntoIterator for &'a Object {
    type Item = (&'a Str, &'a Value);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl IntoIterator for Object {
    type Item = (Str, Value);
    type IntoIter = std::vec::IntoIter<(Str, Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.members.into_iter()
    }
}

/// As for `BTreeMap`: of members with the same key, the last wins.
impl FromIterator<(String, Value)> for Object {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Object {
        let mut o = Object::new();
        o.extend(iter);
        o
    }
}

impl Extend<(String, Value)> for Object {
    fn extend<I: IntoIterator<Item = (String, Value)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<const N: usize> From<[(String, Value); N]> for Object {
    fn from(members: [(String, Value); N]) -> Object {
        members.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_keys_in_code_point_order_and_behaves_like_a_map() {
        let mut o = Object::new();
        for k in ["b", "a", "é", "Z", "aa", "", "\u{1F600}", "\u{FFFF}"] {
            assert_eq!(o.insert(k.to_owned(), Value::Null), None);
        }
        let keys: Vec<&str> = o.keys().map(Str::as_str).collect();
        let mut expected = keys.clone();
        expected.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        assert_eq!(keys, expected);
        assert_eq!(keys[0], "");
        assert_eq!(
            o.insert("a".into(), Value::Bool(true)),
            Some(Value::Null),
            "replaces"
        );
        assert_eq!(o.get("a"), Some(&Value::Bool(true)));
        assert_eq!(o.len(), 8);
        assert_eq!(o.remove("a"), Some(Value::Bool(true)));
        assert!(!o.contains_key("a"));
        *o.get_or_insert_with("x", || Value::Null) = Value::Bool(false);
        assert_eq!(o.get("x"), Some(&Value::Bool(false)));
        o.retain(|k, _| k != "x");
        assert_eq!(o.get("x"), None);
        let last_wins: Object = [
            ("k".to_owned(), Value::Null),
            ("k".to_owned(), Value::Bool(true)),
        ]
        .into_iter()
        .collect();
        assert_eq!(last_wins.len(), 1);
        assert_eq!(last_wins.get("k"), Some(&Value::Bool(true)));
    }
}

//! A multiset of keys: how many holders each key has, present while at least one does. Used
//! wherever several overlapping holders (concurrent deletions, a room's incarnations) must
//! keep a key marked until the last one lets go.

use std::hash::Hash;

use dashmap::DashMap;

/// Keys with their holder counts.
#[derive(Debug)]
pub(crate) struct Counts<K: Eq + Hash>(DashMap<K, usize>);

impl<K: Eq + Hash> Default for Counts<K> {
    fn default() -> Self {
        Counts(DashMap::new())
    }
}

impl<K: Eq + Hash> Counts<K> {
    /// One more holder of `key`.
    pub(crate) fn add(&self, key: K) {
        *self.0.entry(key).or_insert(0) += 1;
    }

    /// One holder of `key` fewer; the key goes with its last holder.
    pub(crate) fn remove<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.0.remove_if_mut(key, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }

    /// How many holders `key` has.
    pub(crate) fn count<Q>(&self, key: &Q) -> usize
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.0.get(key).map_or(0, |n| *n)
    }

    /// Whether `key` has a holder. Cheap when no key has (the common case on hot paths).
    pub(crate) fn contains<Q>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        !self.0.is_empty() && self.0.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_stays_until_its_last_holder_leaves() {
        let c: Counts<String> = Counts::default();
        assert!(!c.contains("r"));
        c.add("r".to_string());
        c.add("r".to_string());
        c.remove("r");
        assert!(c.contains("r"), "one holder left");
        c.remove("r");
        assert!(!c.contains("r"));
        c.remove("r");
        assert!(!c.contains("r"), "an extra release is harmless");
    }
}

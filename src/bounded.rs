//! A table that forgets its oldest entries beyond a bound: what the desk
//! remembers of the peers it hears from, what the AMQP example remembers
//! of the messages it saw.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// A map of at most `bound` entries: inserting one more forgets the
/// oldest. As a set, its values are `()`.
pub struct Bounded<K, V = ()> {
    order: VecDeque<K>,
    map: HashMap<K, V>,
    bound: usize,
}

impl<K: Hash + Eq + Clone, V> Bounded<K, V> {
    /// An empty table of at most `bound` entries.
    pub fn new(bound: usize) -> Self {
        Bounded {
            order: VecDeque::new(),
            map: HashMap::new(),
            bound,
        }
    }

    /// The value kept for `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    /// Whether `key` is kept.
    pub fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// Keeps `value` for `key` (replacing what was kept for it), forgetting
    /// the oldest entry beyond the bound.
    pub fn insert(&mut self, key: K, value: V) {
        if self.map.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
        }
        if self.order.len() > self.bound
            && let Some(oldest) = self.order.pop_front()
        {
            self.map.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_entries_are_forgotten_beyond_the_bound() {
        let mut table = Bounded::new(2);
        table.insert(1, "one");
        table.insert(2, "two");
        table.insert(1, "one again");
        assert_eq!(table.get(&1), Some(&"one again"));
        table.insert(3, "three");
        assert!(!table.contains(&1));
        assert!(table.contains(&2) && table.contains(&3));
    }
}

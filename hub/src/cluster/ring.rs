//! Which node is a room's home: rendezvous (highest-random-weight) hashing over the live
//! nodes. Each room goes to the node whose hash with the room's name is highest, so a node
//! joining takes only the rooms it now wins and a node leaving hands on only its own; no
//! virtual nodes are needed for an even spread. The hash is FNV-1a with a 64-bit finaliser,
//! fixed here rather than `std`'s `DefaultHasher`, whose output may change between Rust
//! releases: nodes built by different compilers must agree.

use serde::Serialize;

/// A live node as the ring sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// Its id (`--node-id`).
    pub id: String,
    /// Where clients reach it (`--advertise-url`).
    pub url: String,
}

/// The live nodes, sorted by id (so every node builds the same ring from the same set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ring {
    nodes: Vec<Node>,
}

impl Ring {
    /// A ring over `nodes` (duplicates by id keep the first).
    pub fn new(mut nodes: Vec<Node>) -> Self {
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes.dedup_by(|a, b| a.id == b.id);
        Self { nodes }
    }

    /// The room's home node; `None` only for an empty ring.
    pub fn home(&self, room: &str) -> Option<&Node> {
        self.nodes.iter().max_by_key(|n| weight(&n.id, room))
    }

    /// The live nodes, sorted by id.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// How many nodes are live.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node is live.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// The rendezvous weight of `node` for `room`. The separator byte keeps ("ab", "c") and
/// ("a", "bc") apart; it cannot occur in UTF-8.
fn weight(node: &str, room: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain([0xff]).chain(room.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finaliser: FNV alone leaves the high bits poorly mixed for short keys.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> Node {
        Node {
            id: id.into(),
            url: format!("http://{id}"),
        }
    }

    fn rooms() -> Vec<String> {
        (0..3000).map(|i| format!("room-{i}")).collect()
    }

    #[test]
    fn an_empty_ring_has_no_home() {
        assert_eq!(Ring::default().home("r"), None);
    }

    #[test]
    fn the_weight_is_fixed_across_builds() {
        // Nodes built by different compilers must agree: these values must never change.
        assert_eq!(weight("a", "r"), weight("a", "r"));
        assert_ne!(weight("ab", "c"), weight("a", "bc"));
        assert_eq!(weight("node-1", "room"), 0xb189_14d6_6211_31fb);
    }

    #[test]
    fn the_order_nodes_are_listed_in_does_not_matter() {
        let a = Ring::new(vec![node("a"), node("b"), node("c")]);
        let b = Ring::new(vec![node("c"), node("a"), node("b"), node("a")]);
        assert_eq!(a, b);
        for r in rooms() {
            assert_eq!(a.home(&r), b.home(&r));
        }
    }

    #[test]
    fn rooms_spread_evenly() {
        let ring = Ring::new(vec![node("a"), node("b"), node("c")]);
        let mut count = std::collections::HashMap::new();
        for r in rooms() {
            let home = ring.home(&r).map(|n| n.id.clone());
            *count.entry(home).or_insert(0usize) += 1;
        }
        assert_eq!(count.len(), 3);
        for (home, n) in count {
            assert!((800..=1200).contains(&n), "{home:?} got {n} of 3000 rooms");
        }
    }

    #[test]
    fn a_joining_node_takes_only_rooms_it_now_wins() {
        let before = Ring::new(vec![node("a"), node("b"), node("c")]);
        let after = Ring::new(vec![node("a"), node("b"), node("c"), node("d")]);
        let mut moved = 0;
        for r in rooms() {
            let (old, new) = (before.home(&r), after.home(&r));
            if old != new {
                assert_eq!(new.map(|n| n.id.as_str()), Some("d"), "{r} moved elsewhere");
                moved += 1;
            }
        }
        assert!((600..=900).contains(&moved), "{moved} of 3000 rooms moved");
    }

    #[test]
    fn a_leaving_node_hands_on_only_its_own_rooms() {
        let before = Ring::new(vec![node("a"), node("b"), node("c")]);
        let after = Ring::new(vec![node("a"), node("c")]);
        for r in rooms() {
            let old = before.home(&r).map(|n| n.id.as_str());
            if old != Some("b") {
                assert_eq!(after.home(&r).map(|n| n.id.as_str()), old, "{r} moved");
            }
        }
    }
}

//! The depth of every nested shared type a document holds, so that an update's nesting can be
//! checked against the document before yrs applies it (see `chorus_protocol::nesting`).
//!
//! yrs offers no public way to walk from a type to its parent, so the index remembers the depth
//! of each nested type as it is admitted: every update reaching a document passes through
//! [`DepthIndex::admit`] first (socket, REST, the cluster bus, the store at load). A document's
//! depth therefore never passes the limit, and deep stored data from before the check is
//! refused at load instead of crashing the node.

use std::collections::HashMap;

use chorus_protocol::nesting::{Anchor, Clocks, ItemId, Nesting, NestingError, Term, scan_update};
use yrs::branch::BranchID;
use yrs::{Assoc, ID, ReadTxn, StickyIndex};

/// The deepest `--max-nesting-depth` may be set to, and the depth compaction checks stored
/// data against: yrs' recursion at this depth stays far within a thread's stack (it aborted at
/// about 6,500 nested values on a 2 MiB stack).
pub const HARD_MAX_NESTING_DEPTH: u32 = 1024;

/// Why an update was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The update itself, or what it adds below the document's types, is too deep or
    /// malformed.
    #[error(transparent)]
    Nesting(#[from] NestingError),
    /// It builds on content this document does not have (yet), so its depth cannot be known.
    #[error("update builds on content the document does not have")]
    Unresolved,
}

/// Depths of a document's nested types.
#[derive(Debug, Clone)]
pub struct DepthIndex {
    max: u32,
    // Depth of each nested type (root types are depth 1 and not listed), including types held
    // back with their update: later updates may build on them before they integrate.
    types: HashMap<ID, u32>,
}

enum Depth {
    Known(u32),
    /// yrs will discard what hangs below it (collected, or not a type).
    Gone,
    Unknown,
}

impl DepthIndex {
    /// An index for an empty document, refusing depths past `max`.
    pub fn new(max: u32) -> Self {
        DepthIndex {
            max,
            types: HashMap::new(),
        }
    }

    /// The limit.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Nested types known.
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// No nested type known.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// Scans `update` and admits it (see [`DepthIndex::admit`]); returns where its content
    /// sits in its clients' clocks.
    pub fn check(&mut self, txn: &impl ReadTxn, update: &[u8]) -> Result<Clocks, Refused> {
        let nesting = scan_update(update, self.max)?;
        self.admit(txn, &nesting)?;
        Ok(nesting.clocks)
    }

    /// Checks what a scanned update adds against the document `txn` reads, and on success
    /// records the types it creates. Call it right before applying the update in the same
    /// transaction: nothing is recorded for a refused update.
    pub fn admit(&mut self, txn: &impl ReadTxn, nesting: &Nesting) -> Result<(), Refused> {
        if nesting.is_empty() {
            return Ok(());
        }
        let mut cache: HashMap<Anchor, Option<u32>> = HashMap::new();
        let mut resolve = |anchor: Anchor| -> Result<Option<u32>, Refused> {
            if let Some(d) = cache.get(&anchor) {
                return Ok(*d);
            }
            let d = match self.depth_of(txn, anchor) {
                Depth::Known(d) => Some(d),
                Depth::Gone => None,
                Depth::Unknown => return Err(Refused::Unresolved),
            };
            cache.insert(anchor, d);
            Ok(d)
        };
        for b in &nesting.bounds {
            if let Some(d) = resolve(b.anchor)?
                && d.saturating_add(b.extra) > self.max
            {
                return Err(NestingError::TooDeep { limit: self.max }.into());
            }
        }
        let mut new = Vec::with_capacity(nesting.types.len());
        for (id, terms) in &nesting.types {
            let mut depth = None;
            for t in terms {
                let d = match *t {
                    Term::Local(d) => Some(d),
                    Term::Anchored(a, r) => resolve(a)?.map(|d| d.saturating_add(r)),
                };
                depth = depth.max(d);
            }
            if let Some(d) = depth {
                new.push((to_id(*id), d));
            }
        }
        self.types.extend(new);
        Ok(())
    }

    fn depth_of(&self, txn: &impl ReadTxn, anchor: Anchor) -> Depth {
        match anchor {
            Anchor::Type(p) => {
                let id = to_id(p);
                if let Some(d) = self.types.get(&id) {
                    return Depth::Known(*d);
                }
                if BranchID::get_nested(txn, &id).is_some() {
                    // A type this index never saw: fail closed.
                    return Depth::Unknown;
                }
                if integrated(txn, p) {
                    Depth::Gone
                } else {
                    Depth::Unknown
                }
            }
            Anchor::ParentOf(o) => {
                match StickyIndex::from_id(to_id(o), Assoc::After).get_offset(txn) {
                    Some(offset) => match offset.branch.id() {
                        BranchID::Root(_) => Depth::Known(1),
                        BranchID::Nested(id) => match self.types.get(&id) {
                            Some(d) => Depth::Known(*d),
                            None => Depth::Unknown,
                        },
                    },
                    None if integrated(txn, o) => Depth::Gone,
                    None => Depth::Unknown,
                }
            }
        }
    }
}

fn to_id(id: ItemId) -> ID {
    ID::new(yrs::block::ClientID::new(id.client), id.clock)
}

fn integrated(txn: &impl ReadTxn, id: ItemId) -> bool {
    txn.state_vector()
        .get(&yrs::block::ClientID::new(id.client))
        > id.clock
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{Doc, Map, MapPrelim, Transact, Update};

    /// Applies `update` to `doc` the way the hub does: checked first, applied only if admitted.
    fn offer(doc: &Doc, depth: &mut DepthIndex, update: &[u8]) -> Result<(), Refused> {
        let mut txn = doc.transact_mut();
        depth.check(&txn, update)?;
        txn.apply_update(Update::decode_v1(update).expect("decodes"))
            .expect("applies");
        Ok(())
    }

    use crate::testing::MapChain;

    /// A chain and its first update (depth 2).
    fn chain(client: u64) -> (MapChain, Vec<u8>) {
        let mut c = MapChain::new(client);
        let first = c.deeper();
        (c, first)
    }

    #[test]
    fn a_chain_of_maps_built_one_update_at_a_time_stops_at_the_limit() {
        let server = Doc::new();
        let mut depth = DepthIndex::new(8);
        let (mut chain, first) = chain(7);
        // Root map is depth 1, the first nested map 2, ... the 7th nested map 8.
        offer(&server, &mut depth, &first).expect("depth 2");
        for level in 3..=8 {
            let u = chain.deeper();
            offer(&server, &mut depth, &u).unwrap_or_else(|e| panic!("depth {level}: {e}"));
        }
        let past = chain.deeper();
        assert_eq!(
            offer(&server, &mut depth, &past),
            Err(Refused::Nesting(NestingError::TooDeep { limit: 8 }))
        );
        assert_eq!(depth.len(), 7);
    }

    #[test]
    fn the_whole_chain_in_one_update_is_refused_by_the_scan_alone() {
        let (mut chain, _) = chain(7);
        for _ in 0..20 {
            chain.deeper();
        }
        use yrs::ReadTxn;
        let all = chain
            .doc
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        // Root map + 21 nested maps: depth 22.
        assert_eq!(
            scan_update(&all, 21),
            Err(NestingError::TooDeep { limit: 21 })
        );
        assert!(scan_update(&all, 22).is_ok());
    }

    #[test]
    fn types_inserted_next_to_existing_ones_take_their_parents_depth() {
        use yrs::{Array, ArrayPrelim, ReadTxn};
        // root array > map > array; then maps appended after existing elements (their parent
        // found through the left origin, which is already in the document).
        let client = Doc::with_client_id(9);
        let root = client.get_or_insert_array("a");
        let inner = {
            let mut txn = client.transact_mut();
            let m = root.push_back(&mut txn, MapPrelim::default());
            m.insert(&mut txn, "list", ArrayPrelim::default())
        };
        let server = Doc::new();
        let mut depth = DepthIndex::new(4);
        let all = client
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        offer(&server, &mut depth, &all).expect("depth 3");
        for i in 0..3 {
            let before = client.transact().state_vector();
            {
                let mut txn = client.transact_mut();
                let m = inner.push_back(&mut txn, MapPrelim::default());
                m.insert(&mut txn, "n", i);
            }
            let u = client.transact().encode_state_as_update_v1(&before);
            offer(&server, &mut depth, &u).expect("a map at depth 4");
        }
        // One more level below those is one too many.
        let before = client.transact().state_vector();
        {
            let mut txn = client.transact_mut();
            inner.push_back(&mut txn, ArrayPrelim::from([ArrayPrelim::default()]));
        }
        let u = client.transact().encode_state_as_update_v1(&before);
        assert_eq!(
            offer(&server, &mut depth, &u),
            Err(Refused::Nesting(NestingError::TooDeep { limit: 4 }))
        );
    }

    #[test]
    fn a_type_whose_parent_never_arrived_is_refused_as_unresolved() {
        let (mut chain, first) = chain(7);
        let _second = chain.deeper();
        let third = chain.deeper();
        let server = Doc::new();
        let mut depth = DepthIndex::new(64);
        offer(&server, &mut depth, &first).expect("first");
        // The third level hangs below the second, which the server never got.
        assert_eq!(offer(&server, &mut depth, &third), Err(Refused::Unresolved));
    }
}

//! The node's vector index: one per tenant, so a query of a small tenant searches only its
//! own vectors and never loses its matches to a global top-k filtered afterwards.
//!
//! Each tenant index is an HNSW graph (`hnsw_rs`) over unit vectors (dot-product distance)
//! plus an arena of the same vectors and their rooms. A query whose grant allows every room
//! walks the graph; one that allows a few rooms scans those rooms' vectors exactly (a graph
//! walk with a narrow filter would miss most of them). A room's new vectors replace its old
//! ones; the graph cannot delete, so replaced entries are skipped until the graph is rebuilt
//! from the arena, which happens once they are as many as the live ones.
//!
//! Built from the store on start and kept current from the store's change feed, on every
//! node alike (search/mod.rs).

use std::collections::HashMap;
use std::sync::Arc;

use chorus_persistence::search::RoomFilter;
use hnsw_rs::prelude::{Distance, Hnsw};
use parking_lot_free::RwLock;

/// Graph parameters: neighbours per node, construction breadth, layers.
const M: usize = 16;
const EF_CONSTRUCTION: usize = 100;
const LAYERS: usize = 16;
/// Allowed vectors up to which a filtered query scans exactly instead of walking the graph.
const EXACT_UP_TO: usize = 20_000;

/// `1 - a·b` for unit vectors, never below zero: rounding makes a vector's dot product with
/// itself exceed 1 now and then, and `hnsw_rs`' own `DistDot` asserts that it does not.
#[derive(Debug, Clone, Copy, Default)]
struct Angular;

impl Distance<f32> for Angular {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

mod parking_lot_free {
    //! `std`'s lock, recovered after a panic (the data is plain and stays consistent).
    pub(super) struct RwLock<T>(std::sync::RwLock<T>);
    impl<T> RwLock<T> {
        pub(super) fn new(t: T) -> Self {
            RwLock(std::sync::RwLock::new(t))
        }
        pub(super) fn read(&self) -> std::sync::RwLockReadGuard<'_, T> {
            self.0.read().unwrap_or_else(|e| e.into_inner())
        }
        pub(super) fn write(&self) -> std::sync::RwLockWriteGuard<'_, T> {
            self.0.write().unwrap_or_else(|e| e.into_inner())
        }
    }
}

/// A nearest chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Near {
    /// Room.
    pub room: Arc<str>,
    /// The chunk's hash.
    pub hash: String,
    /// Cosine similarity to the query.
    pub similarity: f32,
}

struct Entry {
    room: Arc<str>,
    hash: String,
    live: bool,
}

struct TenantIndex {
    model: String,
    dims: usize,
    graph: Hnsw<'static, f32, Angular>,
    entries: Vec<Entry>,
    /// Vectors by entry id, `dims` each.
    arena: Vec<f32>,
    by_room: HashMap<Arc<str>, Vec<usize>>,
    live: usize,
}

impl TenantIndex {
    fn new(model: &str, dims: usize, capacity: usize) -> Self {
        TenantIndex {
            model: model.to_owned(),
            dims,
            graph: Hnsw::new(M, capacity.max(1024), LAYERS, EF_CONSTRUCTION, Angular),
            entries: Vec::new(),
            arena: Vec::new(),
            by_room: HashMap::new(),
            live: 0,
        }
    }

    fn vector(&self, id: usize) -> &[f32] {
        &self.arena[id * self.dims..(id + 1) * self.dims]
    }

    fn remove_room(&mut self, room: &str) {
        if let Some(ids) = self.by_room.remove(room) {
            for id in ids {
                if let Some(e) = self.entries.get_mut(id)
                    && e.live
                {
                    e.live = false;
                    self.live -= 1;
                }
            }
        }
    }

    fn add(&mut self, room: &Arc<str>, hash: String, vector: &[f32]) {
        let id = self.entries.len();
        self.arena.extend_from_slice(vector);
        self.entries.push(Entry {
            room: room.clone(),
            hash,
            live: true,
        });
        self.by_room.entry(room.clone()).or_default().push(id);
        self.live += 1;
        self.graph.insert_slice((vector, id));
    }

    /// Whether replaced entries outnumber live ones (and are worth a rebuild).
    fn worn(&self) -> bool {
        let dead = self.entries.len() - self.live;
        dead > 1000 && dead > self.live
    }

    /// A fresh graph and arena of the live entries.
    fn rebuilt(&self) -> TenantIndex {
        let mut fresh = TenantIndex::new(&self.model, self.dims, self.live);
        for (id, e) in self.entries.iter().enumerate().filter(|(_, e)| e.live) {
            fresh.add(&e.room, e.hash.clone(), self.vector(id));
        }
        fresh
    }

    fn search(&self, query: &[f32], k: usize, filter: &RoomFilter) -> Vec<Near> {
        let open = filter.all && filter.within.is_none();
        let mut found: Vec<(usize, f32)> = if open {
            let ef = (k * 4).max(64);
            self.graph
                .search(query, k * 2, ef)
                .into_iter()
                .filter(|n| self.entries.get(n.d_id).is_some_and(|e| e.live))
                .map(|n| (n.d_id, 1.0 - n.distance))
                .collect()
        } else {
            let allowed: Vec<usize> = self
                .by_room
                .iter()
                .filter(|(room, _)| filter.allows(room))
                .flat_map(|(_, ids)| ids.iter().copied())
                .filter(|id| self.entries[*id].live)
                .collect();
            if allowed.len() <= EXACT_UP_TO {
                allowed
                    .into_iter()
                    .map(|id| (id, dot(query, self.vector(id))))
                    .collect()
            } else {
                let entries = &self.entries;
                let pass = |id: &usize| {
                    entries
                        .get(*id)
                        .is_some_and(|e| e.live && filter.allows(&e.room))
                };
                let ef = (k * 8).max(256);
                self.graph
                    .search_filter(query, k * 2, ef, Some(&pass))
                    .into_iter()
                    .map(|n| (n.d_id, 1.0 - n.distance))
                    .collect()
            }
        };
        found.sort_by(|a, b| b.1.total_cmp(&a.1));
        found.truncate(k);
        found
            .into_iter()
            .map(|(id, similarity)| Near {
                room: self.entries[id].room.clone(),
                hash: self.entries[id].hash.clone(),
                similarity,
            })
            .collect()
    }

    fn bytes(&self) -> usize {
        // The arena, the graph's own copy of each vector and its links (about 2M per node on
        // layer 0, a few more above), entry metadata.
        let n = self.entries.len();
        self.arena.len() * 4 * 2 + n * (2 * M * 8 + 64) + n * (std::mem::size_of::<Entry>() + 40)
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Scales `v` to unit length; `None` for a zero, non-finite or empty vector.
pub(super) fn normalized(mut v: Vec<f32>) -> Option<Vec<f32>> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if v.is_empty() || !norm.is_finite() || norm == 0.0 {
        return None;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    Some(v)
}

/// Every tenant's index on this node.
pub struct Vectors {
    tenants: RwLock<HashMap<String, Arc<RwLock<TenantIndex>>>>,
}

impl std::fmt::Debug for Vectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vectors")
            .field("tenants", &self.tenants.read().len())
            .finish()
    }
}

impl Default for Vectors {
    fn default() -> Self {
        Vectors {
            tenants: RwLock::new(HashMap::new()),
        }
    }
}

impl Vectors {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `vectors` (hash, model, vector) the room's, replacing what it had. Only vectors of
    /// `model`, the tenant's model now, are kept: rooms not embedded again since a model change
    /// keep old vectors in the store, and they must not reset the index. An index of another
    /// model (the tenant changed it) starts over. Blocking: call it off the runtime's workers.
    pub fn set_room(
        &self,
        tenant: &str,
        room: &str,
        model: &str,
        vectors: &[(String, String, Vec<f32>)],
    ) {
        let vectors: Vec<&(String, String, Vec<f32>)> = vectors
            .iter()
            .filter(|(_, m, v)| m == model && !v.is_empty())
            .collect();
        let index = {
            let existing = self.tenants.read().get(tenant).cloned();
            match existing {
                Some(i) => i,
                None => {
                    let Some((_, _, v)) = vectors.first() else {
                        return;
                    };
                    let fresh = Arc::new(RwLock::new(TenantIndex::new(model, v.len(), 1024)));
                    self.tenants
                        .write()
                        .entry(tenant.to_owned())
                        .or_insert(fresh)
                        .clone()
                }
            }
        };
        let mut index = index.write();
        if index.model != model {
            *index = TenantIndex::new(model, vectors.first().map_or(0, |v| v.2.len()), 1024);
        }
        if let Some((_, _, v)) = vectors.first()
            && v.len() != index.dims
        {
            // The model's length changed (new dimensions): start over.
            *index = TenantIndex::new(model, v.len(), 1024);
        }
        index.remove_room(room);
        let room: Arc<str> = Arc::from(room);
        for (hash, _, v) in vectors {
            if v.len() == index.dims {
                index.add(&room, hash.clone(), v);
            }
        }
        if index.worn() {
            let fresh = index.rebuilt();
            *index = fresh;
        }
    }

    /// Forgets a room.
    pub fn remove_room(&self, tenant: &str, room: &str) {
        let index = self.tenants.read().get(tenant).cloned();
        if let Some(index) = index {
            index.write().remove_room(room);
        }
    }

    /// Forgets a tenant.
    pub fn remove_tenant(&self, tenant: &str) {
        self.tenants.write().remove(tenant);
    }

    /// The `k` chunks of the tenant nearest to `query` in rooms `filter` allows, nearest
    /// first. Empty when the tenant has no index or `query` is of another model or length.
    /// Blocking: call it off the runtime's workers.
    pub fn search(
        &self,
        tenant: &str,
        model: &str,
        query: &[f32],
        k: usize,
        filter: &RoomFilter,
    ) -> Vec<Near> {
        let index = self.tenants.read().get(tenant).cloned();
        let Some(index) = index else {
            return Vec::new();
        };
        let index = index.read();
        if index.model != model || index.dims != query.len() || filter.is_empty() {
            return Vec::new();
        }
        index.search(query, k, filter)
    }

    /// Live vectors and an estimate of the bytes held, over all tenants.
    pub fn size(&self) -> (usize, usize) {
        let tenants = self.tenants.read();
        tenants.values().fold((0, 0), |(n, b), i| {
            let i = i.read();
            (n + i.live, b + i.bytes())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(seed: u64, dims: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let raw: Vec<f32> = (0..dims)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 2000) as f32 / 1000.0 - 1.0
            })
            .collect();
        normalized(raw).expect("non-zero")
    }

    fn all() -> RoomFilter {
        RoomFilter::from_patterns(&["*"], None)
    }

    #[test]
    fn finds_the_nearest_in_the_graph_and_exactly_under_a_narrow_grant() {
        let index = Vectors::new();
        for r in 0..300u64 {
            let room = format!("{}/{r}", if r % 100 == 0 { "hr" } else { "team" });
            let vectors: Vec<(String, String, Vec<f32>)> = (0..5)
                .map(|c| (format!("h{r}-{c}"), "m".to_owned(), v(r * 10 + c, 32)))
                .collect();
            index.set_room("t", &room, "m", &vectors);
        }
        let query = v(1234, 32); // room 123's chunk 4
        let near = index.search("t", "m", &query, 5, &all());
        assert_eq!(near[0].hash, "h123-4");
        assert!((near[0].similarity - 1.0).abs() < 1e-4);
        // A grant of three rooms: their best matches, exactly.
        let hr = RoomFilter::from_patterns(&["hr/*"], None);
        let near = index.search("t", "m", &query, 5, &hr);
        assert_eq!(near.len(), 5);
        assert!(near.iter().all(|n| n.room.starts_with("hr/")));
        let expected = {
            let mut all: Vec<(String, f32)> = (0..3u64)
                .flat_map(|r| (0..5).map(move |c| (r, c)))
                .map(|(r, c)| {
                    (
                        format!("h{}-{c}", r * 100),
                        dot(&query, &v(r * 1000 + c, 32)),
                    )
                })
                .collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1));
            all[0].0.clone()
        };
        assert_eq!(near[0].hash, expected);
        // Other tenants, models and lengths find nothing.
        assert!(index.search("u", "m", &query, 5, &all()).is_empty());
        assert!(index.search("t", "other", &query, 5, &all()).is_empty());
        assert!(index.search("t", "m", &v(1, 16), 5, &all()).is_empty());
    }

    #[test]
    fn replaced_and_removed_rooms_are_not_found_and_wear_is_rebuilt() {
        let index = Vectors::new();
        let q = v(7, 16);
        index.set_room("t", "a", "m", &[("old".into(), "m".into(), q.clone())]);
        index.set_room("t", "a", "m", &[("new".into(), "m".into(), v(8, 16))]);
        let near = index.search("t", "m", &q, 3, &all());
        assert!(near.iter().all(|n| n.hash != "old"));
        index.remove_room("t", "a");
        assert!(index.search("t", "m", &q, 3, &all()).is_empty());
        for round in 0..3 {
            for r in 0..600u64 {
                index.set_room(
                    "t",
                    &format!("r{r}"),
                    "m",
                    &[(format!("h{round}"), "m".into(), v(r + round * 1000, 16))],
                );
            }
        }
        let (live, bytes) = index.size();
        assert_eq!(live, 600);
        assert!(bytes > 0);
        let near = index.search("t", "m", &v(599 + 2000, 16), 1, &all());
        assert_eq!(near[0].room.as_ref(), "r599");
        // Vectors of a model that is not the tenant's now are ignored, not a reset.
        index.set_room("t", "r1", "m", &[("old".into(), "m0".into(), v(1, 16))]);
        assert_eq!(index.size().0, 599, "r1's old-model vector is not kept");
        // A new model starts the tenant's index over.
        index.set_room("t", "r0", "m2", &[("x".into(), "m2".into(), v(1, 8))]);
        assert_eq!(index.size().0, 1);
        assert!(index.search("t", "m2", &v(1, 8), 1, &all())[0].hash == "x");
        index.remove_tenant("t");
        assert_eq!(index.size().0, 0);
    }
}

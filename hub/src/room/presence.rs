//! A room's awareness (presence) states: who controls which client id, y-protocols clock rules,
//! and the changes waiting for the next coalescing tick. Pure state, no I/O: the room actor
//! decides when to send what this produces.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use chorus_protocol::awareness::{self, Entry, NULL_STATE};
use chorus_protocol::sync::Message;

use crate::outbound::ConnId;

/// Most awareness client ids one connection may control (a browser tab has one; a few more
/// cover reconnects that reuse a socket). Beyond it the connection is closed with 1008.
pub const MAX_AWARENESS_IDS_PER_CONNECTION: usize = 8;

/// The owner of states that came from another node (no connection has this id).
const REMOTE: ConnId = ConnId::MAX;

/// A connection tried to control more than [`MAX_AWARENESS_IDS_PER_CONNECTION`] ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TooManyStates;

struct State {
    clock: u64,
    state: Bytes,
    owner: ConnId,
}

/// Awareness states of one room.
#[derive(Default)]
pub(super) struct Presence {
    states: HashMap<u64, State>,
    // Client ids each connection controls: removed (and the removal broadcast) when it leaves.
    owned: HashMap<ConnId, HashSet<u64>>,
    // Changed since the last tick.
    dirty: HashSet<u64>,
    removed: Vec<Entry>,
}

impl Presence {
    /// Applies entries a connection sent, by the y-protocols rule: a higher clock replaces, an
    /// equal clock may only remove. Ownership of an id moves to the sender (a client that
    /// reconnected before its old socket timed out keeps its presence).
    pub(super) fn apply(&mut self, conn: ConnId, entries: Vec<Entry>) -> Result<(), TooManyStates> {
        for e in entries {
            let current = self.states.get(&e.client_id).map(|s| s.clock);
            let accept = match current {
                None => !e.is_removal(),
                Some(c) => c < e.clock || (c == e.clock && e.is_removal()),
            };
            if !accept {
                continue;
            }
            // Another node's states are no connection's here, and that node enforced the limit.
            if conn != REMOTE {
                let mine = self.owned.entry(conn).or_default();
                if !mine.contains(&e.client_id) {
                    if mine.len() >= MAX_AWARENESS_IDS_PER_CONNECTION {
                        return Err(TooManyStates);
                    }
                    mine.insert(e.client_id);
                }
            }
            if let Some(prev) = self.states.get(&e.client_id).filter(|p| p.owner != conn)
                && let Some(theirs) = self.owned.get_mut(&prev.owner)
            {
                theirs.remove(&e.client_id);
            }
            if e.is_removal() {
                self.states.remove(&e.client_id);
                self.dirty.remove(&e.client_id);
                self.removed.push(e);
            } else {
                self.dirty.insert(e.client_id);
                self.states.insert(
                    e.client_id,
                    State {
                        clock: e.clock,
                        state: e.state,
                        owner: conn,
                    },
                );
            }
        }
        Ok(())
    }

    /// Removes every state `conn` controlled, as removals at their current clocks (so the
    /// client's next state, clock + 1, is accepted everywhere when it reconnects). Returns
    /// the removals (also queued for the next tick).
    pub(super) fn remove_connection(&mut self, conn: ConnId) -> Vec<Entry> {
        let mut gone = Vec::new();
        for id in self.owned.remove(&conn).unwrap_or_default() {
            if let Some(st) = self.states.get(&id).filter(|s| s.owner == conn) {
                let clock = st.clock;
                self.states.remove(&id);
                self.dirty.remove(&id);
                gone.push(Entry {
                    client_id: id,
                    clock,
                    state: Bytes::from_static(NULL_STATE.as_bytes()),
                });
            }
        }
        self.removed.extend(gone.iter().cloned());
        gone
    }

    /// Applies entries from another node's members, by the same clock rule. No connection
    /// here owns them and no per-connection limit applies (that node enforced it); they go
    /// when that node publishes their removal.
    pub(super) fn apply_remote(&mut self, entries: Vec<Entry>) {
        // Cannot fail: the limit is not applied to REMOTE.
        let _ = self.apply(REMOTE, entries);
    }

    /// The connection that controls `client_id` (another node's states: `None`).
    pub(super) fn owner_of(&self, client_id: u64) -> Option<ConnId> {
        self.states
            .get(&client_id)
            .map(|s| s.owner)
            .filter(|o| *o != REMOTE)
    }

    /// Whether anything waits for the next tick.
    pub(super) fn has_changes(&self) -> bool {
        !self.dirty.is_empty() || !self.removed.is_empty()
    }

    /// Whether removals wait (they are sent at once, not at the next tick).
    pub(super) fn has_removals(&self) -> bool {
        !self.removed.is_empty()
    }

    /// One awareness message with every change since the last call, or `None`.
    pub(super) fn take_changes(&mut self) -> Option<Bytes> {
        let mut entries = std::mem::take(&mut self.removed);
        for id in self.dirty.drain() {
            if let Some(s) = self.states.get(&id) {
                entries.push(Entry {
                    client_id: id,
                    clock: s.clock,
                    state: s.state.clone(),
                });
            }
        }
        (!entries.is_empty())
            .then(|| Message::Awareness(awareness::encode_update(&entries)).encode())
    }

    /// The states a connection controls (client id, JSON state), for the REST presence list.
    pub(super) fn states_of(&self, conn: ConnId) -> Vec<(u64, Bytes)> {
        let mut out: Vec<(u64, Bytes)> = self
            .owned
            .get(&conn)
            .into_iter()
            .flatten()
            .filter_map(|id| self.states.get(id).map(|s| (*id, s.state.clone())))
            .collect();
        out.sort_unstable_by_key(|(id, _)| *id);
        out
    }

    /// One awareness message with every current state (for joiners and query-awareness), or
    /// `None` when nobody has a state.
    pub(super) fn snapshot(&self) -> Option<Bytes> {
        if self.states.is_empty() {
            return None;
        }
        let entries: Vec<Entry> = self
            .states
            .iter()
            .map(|(id, s)| Entry {
                client_id: *id,
                clock: s.clock,
                state: s.state.clone(),
            })
            .collect();
        Some(Message::Awareness(awareness::encode_update(&entries)).encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(id: u64, clock: u64, state: &'static str) -> Entry {
        Entry {
            client_id: id,
            clock,
            state: Bytes::from_static(state.as_bytes()),
        }
    }

    #[test]
    fn remote_states_follow_the_clock_rule_without_the_per_connection_limit() {
        let mut p = Presence::default();
        let many: Vec<Entry> = (1..=20).map(|id| e(id, 1, "{}")).collect();
        p.apply_remote(many);
        assert_eq!(
            p.states.len(),
            20,
            "another node's members, beyond one socket's limit"
        );
        p.apply_remote(vec![e(1, 1, r#"{"stale":1}"#)]);
        assert_eq!(
            &p.states[&1].state[..],
            b"{}",
            "an equal clock does not replace"
        );
        p.apply_remote(vec![e(1, 2, "null")]);
        assert!(
            !p.states.contains_key(&1),
            "a removal at a newer clock removes"
        );
        // A local member taking over an id that came from elsewhere owns it from then on.
        assert!(p.apply(5, vec![e(2, 2, r#"{"here":1}"#)]).is_ok());
        assert_eq!(p.remove_connection(5).len(), 1);
        assert!(!p.states.contains_key(&2));
        assert!(
            p.remove_connection(REMOTE).is_empty(),
            "remote states are no one's"
        );
    }

    #[test]
    fn clock_rules_and_removal_on_leave() {
        let mut p = Presence::default();
        p.apply(1, vec![e(10, 2, "{}")]).expect("ok");
        assert!(p.has_changes());
        assert!(p.take_changes().is_some());
        assert!(p.take_changes().is_none());
        // Stale clock ignored, higher accepted.
        p.apply(1, vec![e(10, 1, r#"{"old":1}"#)]).expect("ok");
        assert!(!p.has_changes());
        p.apply(1, vec![e(10, 3, "{}")]).expect("ok");
        assert!(p.has_changes());
        p.take_changes();
        p.remove_connection(1);
        assert!(p.has_removals());
        let msg = p.take_changes().expect("removal");
        assert!(p.snapshot().is_none());
        let decoded = chorus_protocol::sync::decode_all(msg).expect("decodes");
        let Message::Awareness(payload) = &decoded[0] else {
            panic!("not awareness");
        };
        let entries = awareness::decode_update(payload.clone()).expect("entries");
        assert_eq!((entries[0].clock, entries[0].is_removal()), (3, true));
    }

    #[test]
    fn ownership_moves_and_ids_are_capped() {
        let mut p = Presence::default();
        p.apply(1, vec![e(10, 1, "{}")]).expect("ok");
        p.apply(2, vec![e(10, 2, "{}")]).expect("ok");
        // Connection 1 no longer owns id 10: its leave removes nothing.
        p.remove_connection(1);
        assert!(!p.has_removals());
        assert!(p.snapshot().is_some());
        let many: Vec<Entry> = (0..=MAX_AWARENESS_IDS_PER_CONNECTION as u64)
            .map(|i| e(100 + i, 1, "{}"))
            .collect();
        assert_eq!(p.apply(3, many), Err(TooManyStates));
    }
}

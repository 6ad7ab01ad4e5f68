//! The waiting line for host slots: tasks that found no free slot wait here in
//! arrival order, and a freed slot is handed straight to the first waiter that
//! can use it (no race between woken waiters). When waiters name a client
//! (an API key of the gateway), clients take turns: one waiter of each client
//! in rotation, each client's own waiters in arrival order.
//!
//! A [`WaitState`] is also what a pick (`pick.rs`) finds for a task, in or
//! out of line.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Pool;
use crate::nodes::Node;

/// Where a task stands: what a pick found for it.
#[derive(Debug, Clone)]
pub(super) enum WaitState {
    /// Every host it may use has a request in flight: wait for a slot.
    Waiting,
    /// A slot on this node was taken for the task; it has not picked it up yet.
    Granted(Arc<Node>),
    /// No node of its pool can ever take the task.
    Nobody,
    /// Only cooling nodes are left; the earliest re-probe is due then.
    Recovering(Option<Instant>),
}

pub(super) struct Waiter {
    pub id: u64,
    pub client: Option<Arc<str>>,
    pub pool: Pool,
    pub model: String,
    pub excluded: HashSet<String>,
    /// Hosts other instances hold every slot of (Redis), until a release.
    pub busy_elsewhere: HashSet<String>,
    /// From then on a suspect node is good enough.
    pub patience_at: Instant,
    pub state: WaitState,
    pub wake: Arc<Notify>,
}

impl Waiter {
    /// A waiter for a slot in `pool` for `model`, on a host neither
    /// `excluded` nor `busy_elsewhere`, woken through `wake`; it takes a
    /// suspect node from `patience_at` on.
    pub fn new(
        pool: &Pool,
        model: &str,
        excluded: &HashSet<String>,
        busy_elsewhere: HashSet<String>,
        patience_at: Instant,
        wake: &Arc<Notify>,
    ) -> Waiter {
        Waiter {
            id: 0,
            client: pool.client.clone(),
            pool: pool.clone(),
            model: model.to_string(),
            excluded: excluded.clone(),
            busy_elsewhere,
            patience_at,
            state: WaitState::Waiting,
            wake: wake.clone(),
        }
    }
}

#[derive(Default)]
pub(super) struct Line {
    /// In arrival order.
    pub waiters: Vec<Waiter>,
    next_id: u64,
    /// The client served last (its turn is over until the others had theirs).
    last_served: Option<Option<Arc<str>>>,
}

impl Line {
    pub fn push(&mut self, mut w: Waiter) -> u64 {
        self.next_id += 1;
        w.id = self.next_id;
        self.waiters.push(w);
        self.next_id
    }

    pub fn position(&self, id: u64) -> Option<usize> {
        self.waiters.iter().position(|w| w.id == id)
    }

    pub fn remove(&mut self, id: u64) -> Option<Waiter> {
        self.position(id).map(|i| self.waiters.remove(i))
    }

    pub fn served(&mut self, client: Option<Arc<str>>) {
        self.last_served = Some(client);
    }

    /// Waiter indexes in the order they may take a slot: one per client in
    /// turn (starting after the client served last), each client's by priority
    /// (highest first), then in arrival order.
    pub(crate) fn fair_order(&self) -> Vec<usize> {
        let mut clients: Vec<(&Option<Arc<str>>, Vec<usize>)> = Vec::new();
        for (i, w) in self.waiters.iter().enumerate() {
            match clients.iter_mut().find(|(c, _)| **c == w.client) {
                Some((_, list)) => list.push(i),
                None => clients.push((&w.client, vec![i])),
            }
        }
        for (_, list) in &mut clients {
            // A stable sort: equal priorities keep arrival order.
            list.sort_by_key(|&i| std::cmp::Reverse(self.waiters[i].pool.priority));
        }
        if clients.len() <= 1 {
            return clients.pop().map(|(_, list)| list).unwrap_or_default();
        }
        if let Some(last) = &self.last_served {
            if let Some(p) = clients.iter().position(|(c, _)| *c == last) {
                clients.rotate_left(p + 1);
            }
        }
        let mut order = Vec::with_capacity(self.waiters.len());
        for round in 0.. {
            let before = order.len();
            order.extend(clients.iter().filter_map(|(_, list)| list.get(round)));
            if order.len() == before {
                break;
            }
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Policy;

    fn waiter(client: Option<&str>) -> Waiter {
        waiter_at(client, crate::scheduler::DEFAULT_PRIORITY)
    }

    fn waiter_at(client: Option<&str>, priority: i32) -> Waiter {
        Waiter {
            id: 0,
            client: client.map(Arc::from),
            pool: Pool::new(Vec::new(), Policy::Pool).with_priority(priority),
            model: "m".into(),
            excluded: HashSet::new(),
            busy_elsewhere: HashSet::new(),
            patience_at: Instant::now(),
            state: WaitState::Waiting,
            wake: Arc::new(Notify::new()),
        }
    }

    #[test]
    fn one_client_is_first_come_first_served() {
        let mut q = Line::default();
        for _ in 0..4 {
            q.push(waiter(None));
        }
        assert_eq!(q.fair_order(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn clients_take_turns_starting_after_the_one_served_last() {
        let mut q = Line::default();
        for c in ["a", "a", "a", "b", "c", "b"] {
            q.push(waiter(Some(c)));
        }
        // a1 b1 c1 a2 b2 a3
        assert_eq!(q.fair_order(), vec![0, 3, 4, 1, 5, 2]);
        q.served(Some(Arc::from("a")));
        // b1 c1 a1 b2 a2 a3
        assert_eq!(q.fair_order(), vec![3, 4, 0, 5, 1, 2]);
        let id = q.waiters[3].id;
        q.remove(id);
        assert_eq!(q.waiters.len(), 5);
    }

    #[test]
    fn a_clients_higher_priority_waiter_goes_first_and_equal_ones_keep_arrival_order() {
        let mut q = Line::default();
        for (c, p) in [(None, 5), (None, 7), (None, 5), (None, 6)] {
            q.push(waiter_at(c, p));
        }
        assert_eq!(q.fair_order(), vec![1, 3, 0, 2]);
        // Between clients, turns come first: priority orders each client's own.
        let mut q = Line::default();
        for (c, p) in [(Some("a"), 5), (Some("a"), 9), (Some("b"), 1)] {
            q.push(waiter_at(c, p));
        }
        assert_eq!(q.fair_order(), vec![1, 2, 0]);
    }
}

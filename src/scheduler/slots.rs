//! The slot table: how many requests each host takes at once, and which
//! requests are in flight where. It is the only count of requests in flight:
//! per host and per node are both read from it.

use std::collections::HashMap;

use crate::nodes::Node;

pub(super) struct SlotTable {
    default_capacity: u32,
    capacity: HashMap<String, u32>,
    /// Requests in flight: by host, then by node URL.
    taken: HashMap<String, HashMap<String, u32>>,
}

impl Default for SlotTable {
    fn default() -> Self {
        SlotTable {
            default_capacity: 1,
            capacity: HashMap::new(),
            taken: HashMap::new(),
        }
    }
}

impl SlotTable {
    /// Requests a host takes at once: `per_host` where given, else `default`.
    pub fn set_capacities(&mut self, default: u32, per_host: HashMap<String, u32>) {
        self.default_capacity = default.max(1);
        self.capacity = per_host;
    }

    pub fn set_capacity(&mut self, host: &str, n: u32) {
        self.capacity.insert(host.to_string(), n.max(1));
    }

    pub fn capacity(&self, host: &str) -> u32 {
        self.capacity
            .get(host)
            .copied()
            .unwrap_or(self.default_capacity)
            .max(1)
    }

    /// Requests in flight on `host`.
    pub fn on_host(&self, host: &str) -> u32 {
        self.taken.get(host).map_or(0, |n| n.values().sum())
    }

    /// Requests in flight on `node`.
    pub fn on_node(&self, node: &Node) -> u32 {
        self.taken
            .get(&node.host)
            .and_then(|n| n.get(node.url()))
            .copied()
            .unwrap_or(0)
    }

    pub fn free(&self, host: &str) -> bool {
        self.on_host(host) < self.capacity(host)
    }

    /// A slot on `node`'s host is taken for a request on `node`.
    pub fn take(&mut self, node: &Node) {
        *self
            .taken
            .entry(node.host.clone())
            .or_default()
            .entry(node.url().to_string())
            .or_insert(0) += 1;
    }

    /// The request on `node` ended: its slot is free.
    pub fn give_back(&mut self, node: &Node) {
        let Some(host) = self.taken.get_mut(&node.host) else {
            return;
        };
        if let Some(n) = host.get_mut(node.url()) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                host.remove(node.url());
            }
        }
        if host.is_empty() {
            self.taken.remove(&node.host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::nodes_file::NodeEntry;

    fn node(url: &str, host: &str) -> Node {
        Node::new(
            NodeEntry {
                url: url.into(),
                name: url.into(),
                priority: 0,
                host_id: Some(host.into()),
                extra: Default::default(),
            },
            false,
        )
    }

    #[test]
    fn per_host_and_per_node_are_read_from_one_count() {
        let (a1, a2, b) = (
            node("http://a:1", "A"),
            node("http://a:2", "A"),
            node("http://b:1", "B"),
        );
        let mut t = SlotTable::default();
        t.set_capacity("A", 2);
        t.take(&a1);
        assert!(t.free("A"));
        t.take(&a2);
        assert!(!t.free("A"));
        assert_eq!((t.on_host("A"), t.on_node(&a1), t.on_node(&a2)), (2, 1, 1));
        assert_eq!((t.on_host("B"), t.on_node(&b)), (0, 0));
        t.give_back(&a1);
        t.give_back(&a1);
        assert_eq!((t.on_host("A"), t.on_node(&a1), t.on_node(&a2)), (1, 0, 1));
        t.give_back(&a2);
        assert!(t.taken.is_empty());
    }
}

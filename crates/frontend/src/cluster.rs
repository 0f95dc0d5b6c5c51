//! A node's view of its cluster (`kairos server start` on PostgreSQL): the live members, which
//! of them owns each history shard and each task queue (rendezvous hashing: every node computes
//! the same owner from the same member list, and a member joining or leaving moves only the
//! keys it wins or held), and clients to the other nodes. The membership loop in
//! `kairos-server` keeps the member list current; this module only answers "who owns this".
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kairos_proto::node::node_service_client::NodeServiceClient;
use parking_lot::{Mutex, RwLock};
use tonic::transport::{Channel, Endpoint};

/// A live member of the cluster, as routing needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Its name (unique in the cluster).
    pub name: String,
    /// Where its `NodeService` listens (`host:port`).
    pub internal_address: String,
    /// Where clients reach it (empty when it runs no frontend).
    pub rpc_address: String,
    /// The roles it runs.
    pub roles: Roles,
    /// Its process's session: a node restarted under the same name is another node (what
    /// the old process held in memory is gone).
    pub session: i64,
}

/// The roles a node runs (`--services`). Every node can serve every request; the roles
/// decide what is placed on it: shards on history nodes, task queues on matching nodes, and
/// clients only reach nodes with a frontend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    /// Serves the public API (WorkflowService, OperatorService) on its port.
    pub frontend: bool,
    /// Holds history shards.
    pub history: bool,
    /// Owns task queues.
    pub matching: bool,
    /// Runs background system work (accepted for the reference's command lines: Kairos has
    /// no system workflows yet, so it carries nothing).
    pub worker: bool,
}

impl Roles {
    /// The role names, in their canonical order.
    pub const NAMES: [&'static str; 4] = ["frontend", "history", "matching", "worker"];

    /// Every role.
    pub const ALL: Roles = Roles {
        frontend: true,
        history: true,
        matching: true,
        worker: true,
    };

    /// The roles named in `names` (unknown names are ignored; the command line refuses them).
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Roles {
        let has = |role: &str| names.iter().any(|n| n.as_ref() == role);
        Roles {
            frontend: has("frontend"),
            history: has("history"),
            matching: has("matching"),
            worker: has("worker"),
        }
    }

    /// The names of the roles held, in canonical order.
    pub fn names(&self) -> Vec<String> {
        let held = [self.frontend, self.history, self.matching, self.worker];
        Self::NAMES
            .iter()
            .zip(held)
            .filter(|(_, on)| *on)
            .map(|(name, _)| name.to_string())
            .collect()
    }
}

/// The role a key is placed by.
#[derive(Clone, Copy)]
enum Placed {
    Shard,
    Queue,
}

/// This node's view of the cluster (shared by the frontend, the task router and the
/// membership loop).
pub struct Cluster {
    name: String,
    shard_count: i32,
    /// The live members, by name, this node always among them.
    members: RwLock<Arc<Vec<Node>>>,
    /// Clients to the other nodes, by internal address (channels connect lazily and
    /// reconnect by themselves).
    peers: Mutex<HashMap<String, NodeServiceClient<Channel>>>,
    /// Bumped at every change of the member list.
    changes: tokio::sync::watch::Sender<u64>,
    /// Set as the node leaves: it owns nothing from then on.
    leaving: std::sync::atomic::AtomicBool,
}

/// Who serves a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// This node.
    Here,
    /// Another node.
    There(Node),
}

impl Cluster {
    /// A view holding only this node (`me`) until the membership loop says more.
    pub fn new(me: Node, shard_count: i32) -> Arc<Self> {
        Arc::new(Self {
            name: me.name.clone(),
            shard_count,
            members: RwLock::new(Arc::new(vec![me])),
            peers: Mutex::new(HashMap::new()),
            changes: tokio::sync::watch::Sender::new(0),
            leaving: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// This node is leaving: from now on every shard and task queue is another node's (the
    /// owner the others agree on once this node's row is gone).
    pub fn leave(&self) {
        self.leaving
            .store(true, std::sync::atomic::Ordering::Release);
        self.changes.send_modify(|version| *version += 1);
    }

    /// Whether this node is leaving the cluster.
    pub fn is_leaving(&self) -> bool {
        self.leaving.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Resolves once a change of the member list makes `still_owner` false: a call waiting on
    /// a node that the others now count dead (paused, cut off) is abandoned and tried again
    /// against the new owner. (What the abandoned call might still do there is fenced: the
    /// new owner took its shards' leases.)
    pub async fn until_moved(&self, still_owner: impl Fn() -> bool) {
        let mut changes = self.changes.subscribe();
        loop {
            if changes.changed().await.is_err() {
                return std::future::pending().await;
            }
            if !still_owner() {
                return;
            }
        }
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of history shards.
    pub fn shard_count(&self) -> i32 {
        self.shard_count
    }

    /// This node as its members see it.
    pub fn me(&self) -> Node {
        self.members
            .read()
            .iter()
            .find(|n| n.name == self.name)
            .cloned()
            .expect("a node stays in its own view")
    }

    /// The live members as last seen, by name.
    pub fn members(&self) -> Arc<Vec<Node>> {
        self.members.read().clone()
    }

    /// Replaces the member list (this node stays in it whatever the list says: a node that
    /// serves routes to itself). True if it changed.
    pub fn set_members(&self, mut nodes: Vec<Node>) -> bool {
        if !nodes.iter().any(|n| n.name == self.name) {
            let me = self
                .members
                .read()
                .iter()
                .find(|n| n.name == self.name)
                .cloned();
            nodes.extend(me);
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes.dedup_by(|a, b| a.name == b.name);
        let mut members = self.members.write();
        if **members == nodes {
            return false;
        }
        *members = Arc::new(nodes);
        drop(members);
        self.changes.send_modify(|version| *version += 1);
        true
    }

    /// The member that wins `key` (highest rendezvous score) among those running the role
    /// that places it; among every member if none runs it (a cluster whose only history
    /// node died keeps serving on the others rather than refusing everything).
    fn winner(&self, key: &[u8], placed: Placed) -> Owner {
        let members = self.members.read();
        let leaving = self.leaving.load(std::sync::atomic::Ordering::Acquire);
        let candidates = || {
            members
                .iter()
                .filter(move |node| !(leaving && node.name == self.name))
        };
        let runs = |node: &&Node| match placed {
            Placed::Shard => node.roles.history,
            Placed::Queue => node.roles.matching,
        };
        let best = if candidates().any(|node| runs(&node)) {
            candidates()
                .filter(runs)
                .max_by_key(|node| (score(&node.name, key), node.name.clone()))
        } else {
            candidates().max_by_key(|node| (score(&node.name, key), node.name.clone()))
        };
        match best {
            Some(node) if node.name != self.name => Owner::There(node.clone()),
            _ => Owner::Here,
        }
    }

    /// Who owns history shard `shard_id`.
    pub fn shard_owner(&self, shard_id: i32) -> Owner {
        self.winner(&shard_key(shard_id), Placed::Shard)
    }

    /// Who owns the run of `workflow_id` in the namespace `namespace_id`.
    pub fn run_owner(&self, namespace_id: &str, workflow_id: &str) -> Owner {
        self.shard_owner(kairos_core::ids::shard_for(
            namespace_id,
            workflow_id,
            self.shard_count,
        ))
    }

    /// Who owns the task queue `task_queue` of `namespace_id` (both kinds of task).
    pub fn queue_owner(&self, namespace_id: &str, task_queue: &str) -> Owner {
        let mut key = b"queue/".to_vec();
        key.extend_from_slice(namespace_id.as_bytes());
        key.push(0);
        key.extend_from_slice(task_queue.as_bytes());
        self.winner(&key, Placed::Queue)
    }

    /// The shards this node owns under the current member list.
    pub fn owned_shards(&self) -> Vec<i32> {
        (0..self.shard_count)
            .filter(|shard| self.shard_owner(*shard) == Owner::Here)
            .collect()
    }

    /// A client to `node`.
    pub fn peer(&self, node: &Node) -> Result<NodeServiceClient<Channel>, tonic::Status> {
        let mut peers = self.peers.lock();
        if let Some(client) = peers.get(&node.internal_address) {
            return Ok(client.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{}", node.internal_address))
            .map_err(|e| {
                tonic::Status::internal(format!(
                    "node {} has an invalid address {:?}: {e}",
                    node.name, node.internal_address
                ))
            })?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let client = NodeServiceClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        peers.insert(node.internal_address.clone(), client.clone());
        Ok(client)
    }
}

/// History's way to runs another node holds: a `RunOp` goes to the owner of its target's
/// shard, and is tried again (against whoever owns it then) while the owner is unreachable or
/// the shard moves.
#[tonic::async_trait]
impl kairos_history::engine::RemoteRuns for Cluster {
    fn elsewhere(&self, namespace_id: &str, workflow_id: &str) -> bool {
        self.run_owner(namespace_id, workflow_id) != Owner::Here
    }

    async fn send(
        &self,
        op: &kairos_history::engine::RunOp,
    ) -> kairos_history::Result<kairos_history::engine::RunOpOutcome> {
        use prost::Message;
        let Owner::There(node) = self.run_owner(&op.namespace_id, &op.workflow_id) else {
            return Err(kairos_history::Error::Unavailable(
                "the run's shard moved to this node; trying again".into(),
            ));
        };
        let unavailable =
            |e: tonic::Status| kairos_history::Error::Unavailable(e.message().to_string());
        let request = kairos_proto::node::ApplyRunOpRequest {
            op: op.encode_to_vec(),
        };
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            self.peer(&node).map_err(unavailable)?.apply_run_op(request),
        )
        .await
        .map_err(|_| {
            kairos_history::Error::Unavailable(format!("node {} did not answer", node.name))
        })?
        .map_err(unavailable)?
        .into_inner();
        kairos_history::engine::RunOpOutcome::decode(answer.outcome.as_slice()).map_err(|e| {
            kairos_history::Error::Unavailable(format!(
                "undecodable answer from {}: {e}",
                node.name
            ))
        })
    }
}

fn shard_key(shard_id: i32) -> Vec<u8> {
    let mut key = b"shard/".to_vec();
    key.extend_from_slice(&shard_id.to_be_bytes());
    key
}

/// The rendezvous score of `node` for `key`: FNV-1a over both, then a 64-bit finaliser so
/// that keys differing in one byte spread over every node. Fixed forever: every node of a
/// cluster must compute the same owners, whatever build it runs.
fn score(node: &str, key: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node.bytes().chain([0xff]).chain(key.iter().copied()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        Node {
            name: name.to_string(),
            internal_address: format!("{name}:1"),
            rpc_address: format!("{name}:2"),
            roles: Roles::ALL,
            session: 1,
        }
    }

    fn owners(view: &Cluster) -> Vec<String> {
        (0..view.shard_count())
            .map(|shard| match view.shard_owner(shard) {
                Owner::Here => view.name().to_string(),
                Owner::There(node) => node.name,
            })
            .collect()
    }

    #[test]
    fn every_node_computes_the_same_owners() {
        let names = ["a", "b", "c"];
        let views: Vec<Arc<Cluster>> = names
            .iter()
            .map(|name| {
                let view = Cluster::new(node(name), 64);
                view.set_members(names.iter().map(|n| node(n)).collect());
                view
            })
            .collect();
        let first = owners(&views[0]);
        for view in &views[1..] {
            assert_eq!(owners(view), first);
        }
        for name in names {
            let held = first.iter().filter(|owner| *owner == name).count();
            assert!((8..=40).contains(&held), "{name} owns {held} of 64 shards");
        }
    }

    #[test]
    fn a_node_leaving_moves_only_its_own_shards() {
        let view = Cluster::new(node("a"), 64);
        view.set_members(vec![node("a"), node("b"), node("c")]);
        let before = owners(&view);
        assert!(view.set_members(vec![node("a"), node("b")]));
        let after = owners(&view);
        for (old, new) in before.iter().zip(&after) {
            if old != "c" {
                assert_eq!(old, new, "a shard not held by the leaving node moved");
            } else {
                assert_ne!(new, "c");
            }
        }
        assert!(
            !view.set_members(vec![node("b"), node("a")]),
            "same members"
        );
    }

    #[test]
    fn this_node_stays_in_its_own_view() {
        let view = Cluster::new(node("a"), 4);
        assert!(view.set_members(vec![node("b")]));
        let names: Vec<String> = view.members().iter().map(|n| n.name.clone()).collect();
        assert_eq!(names, ["a", "b"], "a list without this node still holds it");
        view.leave();
        assert!(
            view.owned_shards().is_empty(),
            "a leaving node owns nothing"
        );
        assert_eq!(view.queue_owner("ns", "tq"), Owner::There(node("b")));
    }

    #[test]
    fn shards_go_to_history_nodes_and_queues_to_matching_nodes() {
        let frontend_only = Node {
            roles: Roles::from_names(&["frontend"]),
            ..node("f")
        };
        let history_only = Node {
            roles: Roles::from_names(&["history"]),
            ..node("h")
        };
        let view = Cluster::new(frontend_only.clone(), 16);
        view.set_members(vec![frontend_only, history_only, node("m")]);
        let owners = owners(&view);
        assert!(
            !owners.contains(&"f".to_string()),
            "no shard on a frontend: {owners:?}"
        );
        assert!(owners.contains(&"h".to_string()) && owners.contains(&"m".to_string()));
        for queue in 0..16 {
            assert_eq!(
                view.queue_owner("ns", &format!("tq{queue}")),
                Owner::There(node("m")),
                "the only matching node owns every queue"
            );
        }
        // With no matching node left, every member takes queues again.
        view.set_members(vec![Node {
            roles: Roles::from_names(&["history"]),
            ..node("h")
        }]);
        let placed: std::collections::BTreeSet<bool> = (0..32)
            .map(|q| view.queue_owner("ns", &format!("tq{q}")) == Owner::Here)
            .collect();
        assert_eq!(placed.len(), 2, "queues spread over both nodes");
        assert_eq!(
            Roles::from_names(&["worker", "frontend"]).names(),
            ["frontend", "worker"]
        );
    }
}

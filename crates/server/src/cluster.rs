//! A node of a cluster: its start-up checks (the shard count recorded in the database, a name
//! no live node uses), its heartbeat, and the membership loop that keeps the routing view
//! current and takes and gives up shards and task queues as members come and go.
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use kairos_core::api::TaskSink;
use kairos_frontend::cluster::{Cluster, Node, Owner, Roles};
use kairos_history::Engine;
use kairos_persistence::{MemberRow, Store};

/// How a node joins its cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The node's name, unique in the cluster.
    pub node_name: String,
    /// Where `NodeService` listens (port 0 picks a free port).
    pub internal_listen: SocketAddr,
    /// The address other nodes use to reach `internal_listen` (empty: the address bound,
    /// which must then not be a wildcard).
    pub advertise_internal: String,
    /// A node whose last heartbeat is older than this is dead: its shards and task queues
    /// move to the live nodes.
    pub membership_timeout: Duration,
    /// How often the node records its heartbeat and reads the membership.
    pub heartbeat_interval: Duration,
    /// The roles it runs (`--services`).
    pub roles: Roles,
}

impl ClusterConfig {
    /// A node named `node_name` with the default timings (10 s timeout, 1 s heartbeats).
    pub fn new(node_name: String, internal_listen: SocketAddr) -> Self {
        Self {
            node_name,
            internal_listen,
            advertise_internal: String::new(),
            membership_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            roles: Roles::ALL,
        }
    }
}

/// The metadata key holding the cluster's shard count.
const SHARD_COUNT_KEY: &str = "shard_count";

/// Records `shard_count` as the database's shard count if none is recorded yet, or refuses to
/// start if another one is: a run's shard is its workflow id's hash modulo the count, so two
/// counts would put one run on two shards.
pub(crate) async fn check_shard_count(store: &dyn Store, shard_count: i32) -> anyhow::Result<()> {
    let stored = store
        .claim_metadata(SHARD_COUNT_KEY, shard_count.to_string().into_bytes())
        .await
        .context("failed to read the cluster's shard count")?;
    let stored = String::from_utf8_lossy(&stored).to_string();
    anyhow::ensure!(
        stored == shard_count.to_string(),
        "this database was created with {stored} history shards, and this node is configured \
         with {shard_count}: the shard count is fixed when a database is created; start the \
         node with --num-history-shards {stored}"
    );
    Ok(())
}

/// This process's member row (`rpc` is `None` when it runs no frontend).
pub(crate) fn member_row(
    config: &ClusterConfig,
    rpc: Option<SocketAddr>,
    internal: SocketAddr,
) -> MemberRow {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default();
    MemberRow {
        name: config.node_name.clone(),
        rpc_address: rpc.map(|a| a.to_string()).unwrap_or_default(),
        internal_address: if config.advertise_internal.is_empty() {
            internal.to_string()
        } else {
            config.advertise_internal.clone()
        },
        session: nanos ^ (i64::from(std::process::id()) << 40),
        services: config.roles.names(),
    }
}

pub(crate) fn node(row: &MemberRow) -> Node {
    Node {
        name: row.name.clone(),
        internal_address: row.internal_address.clone(),
        rpc_address: row.rpc_address.clone(),
        roles: Roles::from_names(&row.services),
        session: row.session,
    }
}

/// Joins: refuses a name a live node holds, records the first heartbeat and reads the members.
pub(crate) async fn join(
    store: &dyn Store,
    me: &MemberRow,
    config: &ClusterConfig,
    view: &Cluster,
) -> anyhow::Result<()> {
    let live = store
        .live_members(config.membership_timeout)
        .await
        .context("failed to read the cluster's members")?;
    if let Some(other) = live
        .iter()
        .find(|m| m.name == me.name && m.session != me.session)
    {
        anyhow::bail!(
            "node name {:?} is in use by a live node (at {}); give this node another \
             --node-name, or wait {} s after that node stopped",
            me.name,
            other.rpc_address,
            config.membership_timeout.as_secs()
        );
    }
    store
        .heartbeat_member(me)
        .await
        .context("failed to record this node in the cluster's members")?;
    let mut nodes: Vec<Node> = live.iter().map(node).collect();
    nodes.push(node(me));
    view.set_members(nodes);
    Ok(())
}

/// Everything the membership loop works on.
pub(crate) struct Membership {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) me: MemberRow,
    pub(crate) config: ClusterConfig,
    pub(crate) view: Arc<Cluster>,
    pub(crate) engine: Engine,
    pub(crate) matching: kairos_matching::Handle,
    pub(crate) tasks: Arc<dyn TaskSink>,
}

impl Membership {
    /// Takes the shards this node owns under the current view and gives up the others.
    pub(crate) async fn balance_shards(&self) {
        let wanted: BTreeSet<i32> = self.view.owned_shards().into_iter().collect();
        let held: BTreeSet<i32> = self.engine.held_shards().into_iter().collect();
        for shard in held.difference(&wanted) {
            self.engine.release_shard(*shard);
        }
        let missing: Vec<i32> = wanted.difference(&held).copied().collect();
        if !missing.is_empty() {
            match self.engine.acquire_shards(&missing).await {
                Ok(()) => tracing::info!(shards = ?missing, "took shards"),
                Err(e) => tracing::warn!(shards = ?missing, error = %e,
                    "failed to take shards; trying again at the next heartbeat"),
            }
        }
    }

    /// Hands the tasks of queues this node no longer owns to their owners; their waiting
    /// polls answer empty (their workers poll again, and reach the new owner).
    fn rehome_queues(&self) {
        let view = self.view.clone();
        let moved = self.matching.drain_queues(|namespace_id, task_queue| {
            view.queue_owner(namespace_id, task_queue) == Owner::Here
        });
        for task in moved {
            self.tasks.add_task(task);
        }
    }

    /// Removes the members whose internal port refuses connections: their process is gone
    /// (a live node listens from before it joins until after it leaves), so the others need
    /// not wait for the membership timeout to take over. A paused or unreachable node does
    /// not refuse (its connections hang or time out): it waits for the timeout. Removing a
    /// live node by mistake costs a moment: its next heartbeat writes its row again.
    async fn evict_dead(&self, live: &mut Vec<MemberRow>) {
        let mut gone = Vec::new();
        for member in live.iter().filter(|m| m.name != self.me.name) {
            let probe = tokio::time::timeout(
                Duration::from_millis(300),
                tokio::net::TcpStream::connect(member.internal_address.as_str()),
            )
            .await;
            if let Ok(Err(e)) = probe
                && e.kind() == std::io::ErrorKind::ConnectionRefused
            {
                gone.push(member.clone());
            }
        }
        for member in gone {
            tracing::warn!(node = %member.name, address = %member.internal_address,
                "node refuses connections on its internal port: removed from the members");
            if let Err(e) = self.store.remove_member(&member.name, member.session).await {
                tracing::warn!(error = %e, "failed to remove a dead node's row");
            }
            live.retain(|m| m.name != member.name);
        }
    }

    /// One heartbeat: records this node alive, reads the members, and moves shards and queues
    /// if they changed. Returns whether the heartbeat was recorded.
    async fn beat(&self) -> bool {
        let recorded = match self.store.heartbeat_member(&self.me).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "failed to record this node's heartbeat");
                false
            }
        };
        let mut live = match self
            .store
            .live_members(self.config.membership_timeout)
            .await
        {
            Ok(live) => live,
            Err(e) => {
                tracing::warn!(error = %e, "failed to read the cluster's members");
                return recorded;
            }
        };
        self.evict_dead(&mut live).await;
        let processes = |view: &Cluster| -> BTreeSet<(String, i64)> {
            view.members()
                .iter()
                .map(|n| (n.name.clone(), n.session))
                .collect()
        };
        let before = processes(&self.view);
        let changed = self.view.set_members(live.iter().map(node).collect());
        if changed {
            let after = processes(&self.view);
            let names: Vec<&str> = after.iter().map(|(name, _)| name.as_str()).collect();
            tracing::info!(members = ?names, "cluster membership changed");
            self.rehome_queues();
            self.balance_shards().await;
            if before.difference(&after).next().is_some() {
                // A node left or restarted: the tasks its queues held in memory exist only
                // as rows.
                if let Err(e) = self.engine.redispatch_transfers().await {
                    tracing::warn!(error = %e, "failed to hand out the held shards' tasks again");
                }
            }
        } else {
            // Shards lost to fencing (another node's view differed for a moment) are taken
            // back when the views agree this node owns them.
            self.balance_shards().await;
        }
        if let Err(e) = self.engine.namespaces().reload().await {
            tracing::warn!(error = %e, "failed to reload the namespaces");
        }
        recorded
    }

    /// Beats every `heartbeat_interval` until the process ends. A node that could not record
    /// a heartbeat for the whole membership timeout counts as dead to the others, who take
    /// its shards: it gives them up itself (fencing would refuse its writes anyway) and takes
    /// them again once it is back.
    pub(crate) async fn run(self) {
        let mut last_recorded = Instant::now();
        loop {
            tokio::time::sleep(self.config.heartbeat_interval).await;
            if self.beat().await {
                last_recorded = Instant::now();
            } else if last_recorded.elapsed() >= self.config.membership_timeout {
                for shard in self.engine.held_shards() {
                    self.engine.release_shard(shard);
                }
            }
        }
    }
}

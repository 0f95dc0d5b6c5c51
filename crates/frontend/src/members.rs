//! `kairos.cluster.v1.ClusterService`, on the public port: the cluster's members, the roles
//! each runs and the shards each holds (each member asked over its internal port), for
//! `kairos operator cluster describe`. A single server answers as a cluster of one.
use std::sync::Arc;
use std::time::Duration;

use kairos_proto::cluster::cluster_service_server::ClusterService;
use kairos_proto::cluster::{ClusterMember, DescribeClusterRequest, DescribeClusterResponse};
use kairos_proto::node::DescribeNodeRequest;
use tonic::{Request, Response, Status};

use crate::cluster::Roles;
use crate::error::to_status;
use crate::workflow::{Frontend, SERVER_VERSION};

/// How long describe waits for each other member's answer.
const ASK_FOR: Duration = Duration::from_secs(2);

/// The ClusterService of one node.
pub struct Members {
    frontend: Arc<Frontend>,
}

impl Members {
    pub(crate) fn new(frontend: Arc<Frontend>) -> Self {
        Self { frontend }
    }
}

#[tonic::async_trait]
impl ClusterService for Members {
    async fn describe_cluster(
        &self,
        _request: Request<DescribeClusterRequest>,
    ) -> Result<Response<DescribeClusterResponse>, Status> {
        let frontend = &self.frontend;
        let (_, store) = frontend.engine.cluster().await.map_err(to_status)?;
        let mut held = frontend.engine.held_shards();
        held.sort_unstable();
        let members = match &frontend.cluster {
            None => vec![ClusterMember {
                name: "local".into(),
                services: Roles::ALL.names(),
                shards: held,
                reachable: true,
                answering: true,
                ..Default::default()
            }],
            Some(cluster) => {
                let nodes = cluster.members();
                let asks = nodes.iter().cloned().map(|node| {
                    let held = held.clone();
                    async move {
                        let mut member = ClusterMember {
                            name: node.name.clone(),
                            rpc_address: node.rpc_address.clone(),
                            internal_address: node.internal_address.clone(),
                            services: node.roles.names(),
                            ..Default::default()
                        };
                        if node.name == cluster.name() {
                            member.shards = held;
                            member.reachable = true;
                            member.answering = true;
                            return member;
                        }
                        let asked = match cluster.peer(&node) {
                            Ok(mut peer) => {
                                tokio::time::timeout(
                                    ASK_FOR,
                                    peer.describe_node(DescribeNodeRequest {}),
                                )
                                .await
                            }
                            Err(_) => return member,
                        };
                        if let Ok(Ok(answer)) = asked {
                            let answer = answer.into_inner();
                            member.shards = answer.shards;
                            member.services = answer.services;
                            member.reachable = true;
                        }
                        member
                    }
                });
                futures::future::join_all(asks).await
            }
        };
        Ok(Response::new(DescribeClusterResponse {
            cluster_name: "active".into(),
            server_version: SERVER_VERSION.into(),
            persistence_store: store.into(),
            history_shard_count: frontend.options.shard_count,
            members,
        }))
    }
}

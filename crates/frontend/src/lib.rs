//! Kairos frontend: the public gRPC surface (WorkflowService, OperatorService, grpc health).
//! It validates requests, resolves namespaces, composes matching and history, and is the only
//! crate that knows tonic server types and maps errors to the wire.

pub mod cluster;
mod deadline;
mod error;
mod forward;
mod health;
mod inflate;
mod links;
mod members;
mod node;
mod operator;
mod panics;
mod tasks;
mod validate;
mod workers;
mod workflow;

use std::sync::Arc;

use kairos_core::ServerOptions;
use kairos_history::Engine;
use kairos_proto::cluster::cluster_service_server::ClusterServiceServer;
use kairos_proto::health::health_server::HealthServer;
use kairos_proto::node::node_service_server::NodeServiceServer;
use kairos_proto::operatorservice::operator_service_server::OperatorServiceServer;
use kairos_proto::workflowservice::workflow_service_server::WorkflowServiceServer;
use tonic::codec::CompressionEncoding;

pub use deadline::DeadlineLayer;
pub use inflate::{InflateLayer, inflate_request};
pub use node::NodeServer;
pub use panics::CatchPanicLayer;
pub use tasks::TaskRouter;
pub use workflow::Frontend;

/// The three gRPC services, ready to be added to a tonic router.
pub struct Services {
    /// WorkflowService.
    pub workflow: WorkflowServiceServer<Frontend>,
    /// OperatorService.
    pub operator: OperatorServiceServer<operator::Operator>,
    /// grpc.health.v1.Health.
    pub health: HealthServer<health::Health>,
    /// `kairos.cluster.v1.ClusterService` (the members and their shards).
    pub cluster: ClusterServiceServer<members::Members>,
    /// `kairos.internal.v1.NodeService`, for the other nodes of a cluster (served on the
    /// internal port); `None` outside a cluster.
    pub node: Option<NodeServiceServer<NodeServer>>,
}

/// Builds the services over an engine and the matching handle. Every service accepts gzip
/// (the SDKs compress their requests) but answers uncompressed: on loopback and LAN links the
/// deflate state set up per message cost more server CPU than the bytes saved (measured with
/// kairos-bench), and every gRPC client reads uncompressed answers.
pub fn services(
    engine: Engine,
    matching: kairos_matching::Handle,
    cluster: Option<Arc<cluster::Cluster>>,
    options: ServerOptions,
) -> Services {
    // `InflateLayer` holds requests to `limits.request_size` first; tonic's own check is a
    // backstop.
    let max = options.limits.request_size.saturating_add(1024);
    let in_cluster = cluster.is_some();
    let frontend = Arc::new(Frontend::new(
        engine.clone(),
        matching,
        cluster,
        Arc::new(options),
    ));
    Services {
        node: in_cluster.then(|| {
            NodeServiceServer::from_arc(Arc::new(NodeServer::new(frontend.clone())))
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX)
        }),
        workflow: WorkflowServiceServer::from_arc(frontend.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        operator: OperatorServiceServer::new(operator::Operator::new(frontend.as_ref().clone()))
            .accept_compressed(CompressionEncoding::Gzip),
        health: HealthServer::new(health::Health).accept_compressed(CompressionEncoding::Gzip),
        cluster: ClusterServiceServer::new(members::Members::new(frontend.clone()))
            .accept_compressed(CompressionEncoding::Gzip),
    }
}

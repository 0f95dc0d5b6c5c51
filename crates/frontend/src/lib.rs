//! Kairos frontend: the public gRPC surface (WorkflowService, OperatorService, grpc health).
//! It validates requests, resolves namespaces, composes matching and history, and is the only
//! crate that knows tonic server types and maps errors to the wire.

mod deadline;
mod error;
mod health;
mod inflate;
mod links;
mod operator;
mod panics;
mod validate;
mod workers;
mod workflow;

use std::sync::Arc;

use kairos_core::ServerOptions;
use kairos_history::Engine;
use kairos_proto::health::health_server::HealthServer;
use kairos_proto::operatorservice::operator_service_server::OperatorServiceServer;
use kairos_proto::workflowservice::workflow_service_server::WorkflowServiceServer;
use tonic::codec::CompressionEncoding;

pub use deadline::DeadlineLayer;
pub use inflate::{InflateLayer, inflate_request};
pub use panics::CatchPanicLayer;
pub use workflow::Frontend;

/// The three gRPC services, ready to be added to a tonic router.
pub struct Services {
    /// WorkflowService.
    pub workflow: WorkflowServiceServer<Frontend>,
    /// OperatorService.
    pub operator: OperatorServiceServer<operator::Operator>,
    /// grpc.health.v1.Health.
    pub health: HealthServer<health::Health>,
}

/// Builds the services over an engine and the matching handle. Every service accepts gzip
/// (the SDKs compress their requests) but answers uncompressed: on loopback and LAN links the
/// deflate state set up per message cost more server CPU than the bytes saved (measured with
/// kairos-bench), and every gRPC client reads uncompressed answers.
pub fn services(
    engine: Engine,
    matching: kairos_matching::Handle,
    options: ServerOptions,
) -> Services {
    // `InflateLayer` holds requests to `limits.request_size` first; tonic's own check is a
    // backstop.
    let max = options.limits.request_size.saturating_add(1024);
    let frontend = Frontend::new(engine.clone(), matching, Arc::new(options));
    Services {
        workflow: WorkflowServiceServer::new(frontend.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        operator: OperatorServiceServer::new(operator::Operator::new(frontend))
            .accept_compressed(CompressionEncoding::Gzip),
        health: HealthServer::new(health::Health).accept_compressed(CompressionEncoding::Gzip),
    }
}

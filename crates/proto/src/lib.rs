//! Server (and client) traits for Temporal's public gRPC services, generated at build time over
//! the message types of `temporalio-protos`, so the wire types are exactly the SDKs' own.

/// `temporal.api.workflowservice.v1.WorkflowService`.
#[allow(clippy::all)]
pub mod workflowservice {
    tonic::include_proto!("temporal.api.workflowservice.v1");
}

/// `temporal.api.operatorservice.v1.OperatorService`.
#[allow(clippy::all)]
pub mod operatorservice {
    tonic::include_proto!("temporal.api.operatorservice.v1");
}

/// `grpc.health.v1.Health`.
#[allow(clippy::all)]
pub mod health {
    tonic::include_proto!("grpc.health.v1");
}

pub use temporalio_protos as protos;

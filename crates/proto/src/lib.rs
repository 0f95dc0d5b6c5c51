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

/// `kairos.internal.v1.NodeService`: calls between the nodes of a cluster.
#[allow(clippy::all)]
pub mod node {
    tonic::include_proto!("kairos.internal.v1");
}

/// Kairos's operator API (`kairos.cluster.v1`): the cluster's members and what each holds.
pub mod cluster {
    tonic::include_proto!("kairos.cluster.v1");
}

pub use temporalio_protos as protos;

/// The encoded `FileDescriptorSet` of every Temporal API message and service, as
/// `temporalio-protos` builds it: what a test needs to build any request by reflection. Only
/// linked into binaries that use it.
pub const DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/temporal_descriptors.bin"));

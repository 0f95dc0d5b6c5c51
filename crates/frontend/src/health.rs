//! `grpc.health.v1.Health`: SERVING for the server as a whole and for each of our services.
use kairos_proto::health::health_server;
use temporalio_protos::grpc::health::v1::{
    HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
};
use tonic::{Request, Response, Status};

/// The health service.
#[derive(Debug, Clone, Copy)]
pub struct Health;

const KNOWN: &[&str] = &[
    "",
    "temporal.api.workflowservice.v1.WorkflowService",
    "temporal.api.operatorservice.v1.OperatorService",
];

#[tonic::async_trait]
impl health_server::Health for Health {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        if !KNOWN.contains(&service.as_str()) {
            return Err(Status::not_found(format!("unknown service {service}")));
        }
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }
}

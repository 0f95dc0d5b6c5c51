//! OperatorService. Namespace and search-attribute administration arrive with the visibility
//! issue; until then every RPC answers UNIMPLEMENTED naming itself (generated default stubs).
use kairos_proto::operatorservice::operator_service_server;

use crate::workflow::Frontend;

/// The operator service.
#[derive(Clone)]
pub struct Operator {
    #[allow(dead_code)]
    frontend: Frontend,
}

impl Operator {
    pub(crate) fn new(frontend: Frontend) -> Self {
        Self { frontend }
    }
}

#[tonic::async_trait]
impl operator_service_server::OperatorService for Operator {}

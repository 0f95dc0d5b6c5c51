//! The one place where errors become gRPC statuses with Temporal error details (brief E).
use prost::Message;
use temporalio_protos::google::rpc::Status as RpcStatus;
use temporalio_protos::temporal::api::errordetails::v1 as details;
use tonic::{Code, Status};

fn with_detail(code: Code, message: String, type_name: &str, detail: Vec<u8>) -> Status {
    let status = RpcStatus {
        code: code as i32,
        message: message.clone(),
        details: vec![prost_wkt_types::Any {
            type_url: format!("type.googleapis.com/{type_name}"),
            value: detail,
        }],
    };
    Status::with_details(code, message, status.encode_to_vec().into())
}

/// `NOT_FOUND` + `NamespaceNotFoundFailure`.
pub fn namespace_not_found(namespace: &str) -> Status {
    with_detail(
        Code::NotFound,
        format!("Namespace {namespace} is not found."),
        "temporal.api.errordetails.v1.NamespaceNotFoundFailure",
        details::NamespaceNotFoundFailure {
            namespace: namespace.to_string(),
        }
        .encode_to_vec(),
    )
}

/// `NOT_FOUND` + `NotFoundFailure`.
pub fn not_found(message: impl Into<String>) -> Status {
    with_detail(
        Code::NotFound,
        message.into(),
        "temporal.api.errordetails.v1.NotFoundFailure",
        details::NotFoundFailure::default().encode_to_vec(),
    )
}

/// `PERMISSION_DENIED` + `PermissionDeniedFailure`.
pub fn permission_denied(message: impl Into<String>) -> Status {
    with_detail(
        Code::PermissionDenied,
        message.into(),
        "temporal.api.errordetails.v1.PermissionDeniedFailure",
        details::PermissionDeniedFailure::default().encode_to_vec(),
    )
}

/// `FAILED_PRECONDITION` with `WorkflowNotReadyFailure`: a query to a run that never completed
/// a workflow task.
pub fn workflow_not_ready() -> Status {
    with_detail(
        Code::FailedPrecondition,
        "workflow not ready".to_string(),
        "temporal.api.errordetails.v1.WorkflowNotReadyFailure",
        details::WorkflowNotReadyFailure::default().encode_to_vec(),
    )
}

/// `INVALID_ARGUMENT` with `QueryFailedFailure`: the workflow's query handler failed.
pub fn query_failed(
    message: String,
    failure: Option<temporalio_protos::temporal::api::failure::v1::Failure>,
) -> Status {
    with_detail(
        Code::InvalidArgument,
        message,
        "temporal.api.errordetails.v1.QueryFailedFailure",
        details::QueryFailedFailure { failure }.encode_to_vec(),
    )
}

/// `MultiOperationExecutionFailure`, with the failed operation's own code: one operation of
/// update-with-start failed (`failed` is its index); its slot carries that operation's own
/// status, the others say they were aborted.
pub fn multi_operation_failed(failed: usize, count: usize, error: Status) -> Status {
    let own_details = RpcStatus::decode(error.details())
        .map(|s| s.details)
        .unwrap_or_default();
    let statuses = (0..count)
        .map(|i| {
            if i == failed {
                details::multi_operation_execution_failure::OperationStatus {
                    code: error.code() as i32,
                    message: error.message().to_string(),
                    details: own_details.clone(),
                }
            } else {
                details::multi_operation_execution_failure::OperationStatus {
                    code: Code::Aborted as i32,
                    message: "Operation was aborted.".to_string(),
                    details: vec![prost_wkt_types::Any {
                        type_url:
                            "type.googleapis.com/temporal.api.failure.v1.MultiOperationExecutionAborted"
                                .to_string(),
                        value: temporalio_protos::temporal::api::failure::v1::MultiOperationExecutionAborted::default()
                            .encode_to_vec(),
                    }],
                }
            }
        })
        .collect();
    with_detail(
        error.code(),
        "Update-with-Start could not be executed.".to_string(),
        "temporal.api.errordetails.v1.MultiOperationExecutionFailure",
        details::MultiOperationExecutionFailure { statuses }.encode_to_vec(),
    )
}

/// `INVALID_ARGUMENT` without a detail, as the Go server sends it.
pub fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message.into())
}

/// Maps a history error to the wire.
pub fn to_status(e: kairos_history::Error) -> Status {
    use kairos_history::Error as E;
    match e {
        E::NotFound(m) => not_found(m),
        E::NamespaceNotFound(ns) => namespace_not_found(&ns),
        E::NamespaceAlreadyExists(ns) => with_detail(
            Code::AlreadyExists,
            format!("Namespace already exists: {ns}"),
            "temporal.api.errordetails.v1.NamespaceAlreadyExistsFailure",
            details::NamespaceAlreadyExistsFailure::default().encode_to_vec(),
        ),
        E::AlreadyStarted {
            message,
            start_request_id,
            run_id,
        } => with_detail(
            Code::AlreadyExists,
            message,
            "temporal.api.errordetails.v1.WorkflowExecutionAlreadyStartedFailure",
            details::WorkflowExecutionAlreadyStartedFailure {
                start_request_id,
                first_execution_run_id: run_id.clone(),
                run_id,
            }
            .encode_to_vec(),
        ),
        E::Invalid(m) => invalid(m),
        E::BusyWorkflow(m) => with_detail(
            Code::ResourceExhausted,
            m,
            "temporal.api.errordetails.v1.ResourceExhaustedFailure",
            details::ResourceExhaustedFailure {
                cause: temporalio_protos::temporal::api::enums::v1::ResourceExhaustedCause::BusyWorkflow
                    as i32,
                scope: temporalio_protos::temporal::api::enums::v1::ResourceExhaustedScope::Namespace
                    as i32,
            }
            .encode_to_vec(),
        ),
        E::Unavailable(m) => {
            tracing::error!(error = %m, "request failed in the store");
            Status::unavailable(m)
        }
        E::ShardOwnershipLost { .. } => Status::unavailable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn already_started_carries_the_typed_detail() {
        let status = to_status(kairos_history::Error::AlreadyStarted {
            message: "running".into(),
            start_request_id: "req".into(),
            run_id: "run-1".into(),
        });
        assert_eq!(status.code(), Code::AlreadyExists);
        let decoded = RpcStatus::decode(status.details()).expect("details decode");
        assert_eq!(
            decoded.details[0].type_url,
            "type.googleapis.com/temporal.api.errordetails.v1.WorkflowExecutionAlreadyStartedFailure"
        );
        let failure = details::WorkflowExecutionAlreadyStartedFailure::decode(
            decoded.details[0].value.as_slice(),
        )
        .expect("decodes");
        assert_eq!(failure.run_id, "run-1");
    }

    #[test]
    fn unknown_namespace_is_not_found_with_namespace_detail() {
        let status = to_status(kairos_history::Error::NamespaceNotFound("nope".into()));
        assert_eq!(status.code(), Code::NotFound);
        let decoded = RpcStatus::decode(status.details()).expect("details decode");
        assert!(
            decoded.details[0]
                .type_url
                .ends_with("NamespaceNotFoundFailure")
        );
    }
}

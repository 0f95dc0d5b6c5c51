//! Links to history events that answers carry, as the reference sets them: a start points at
//! the run's started event, a signal at its request (the event id is not known when it may
//! still be buffered).
use temporalio_protos::temporal::api::common::v1::Link;
use temporalio_protos::temporal::api::common::v1::link::{self, WorkflowEvent, workflow_event};
use temporalio_protos::temporal::api::enums::v1::EventType;

fn to_run(
    namespace: &str,
    workflow_id: &str,
    run_id: &str,
    reference: workflow_event::Reference,
) -> Link {
    Link {
        variant: Some(link::Variant::WorkflowEvent(WorkflowEvent {
            namespace: namespace.to_string(),
            workflow_id: workflow_id.to_string(),
            run_id: run_id.to_string(),
            reference: Some(reference),
        })),
    }
}

/// The started event (id 1) of a run.
pub fn started(namespace: &str, workflow_id: &str, run_id: &str) -> Link {
    to_run(
        namespace,
        workflow_id,
        run_id,
        workflow_event::Reference::EventRef(workflow_event::EventReference {
            event_id: 1,
            event_type: EventType::WorkflowExecutionStarted as i32,
        }),
    )
}

/// The signal a request delivered to a run.
pub fn signaled(namespace: &str, workflow_id: &str, run_id: &str, request_id: &str) -> Link {
    to_run(
        namespace,
        workflow_id,
        run_id,
        workflow_event::Reference::RequestIdRef(workflow_event::RequestIdReference {
            request_id: request_id.to_string(),
            event_type: EventType::WorkflowExecutionSignaled as i32,
        }),
    )
}

//! `kairos.internal.v1.NodeService`: what the other nodes of a cluster call on this one. A
//! forwarded WorkflowService call is served by the same handler as a client's (marked, so it
//! is not forwarded again); tasks for this node's task queues arrive by `AddTask`; a poll on
//! another node that took a task of a run held here has it started by `StartTask`.
use std::sync::Arc;

use kairos_core::api::{QueuedTask, TaskKind, TaskSink};
use kairos_proto::node::node_service_server::NodeService;
use kairos_proto::node::{
    AddTaskRequest, AddTaskResponse, ApplyRunOpRequest, ApplyRunOpResponse, DescribeNodeRequest,
    DescribeNodeResponse, ForwardRequest, ForwardResponse, StartTaskRequest, StartTaskResponse,
};
use kairos_proto::workflowservice::workflow_service_server::WorkflowService;
use prost::Message;
use temporalio_protos::temporal::api::workflowservice::v1::*;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::forward::FORWARDED;
use crate::workflow::Frontend;

/// The NodeService of one node.
pub struct NodeServer {
    frontend: Arc<Frontend>,
}

impl NodeServer {
    pub(crate) fn new(frontend: Arc<Frontend>) -> Self {
        Self { frontend }
    }
}

/// Decodes the forwarded request, serves it with `Frontend`'s handler, encodes the answer.
macro_rules! serve {
    ($frontend:expr, $method:expr, $metadata:expr, $body:expr,
     { $($name:literal => $handler:ident($req:ty)),* $(,)? }) => {
        match $method {
            $($name => {
                let message = <$req>::decode($body).map_err(|e| {
                    Status::invalid_argument(format!("undecodable forwarded {}: {e}", $name))
                })?;
                let request =
                    Request::from_parts($metadata, Default::default(), message);
                WorkflowService::$handler($frontend, request)
                    .await?
                    .into_inner()
                    .encode_to_vec()
            })*
            other => {
                return Err(Status::unimplemented(format!(
                    "this node does not serve forwarded {other} calls"
                )))
            }
        }
    };
}

pub(crate) fn task_from_wire(
    task: Option<kairos_proto::node::QueuedTask>,
) -> Result<QueuedTask, Status> {
    let task = task.ok_or_else(|| Status::invalid_argument("no task"))?;
    Ok(QueuedTask {
        namespace_id: task.namespace_id,
        task_queue: task.task_queue,
        kind: if task.kind == 2 {
            TaskKind::Activity
        } else {
            TaskKind::Workflow
        },
        task_id: task.task_id,
        shard_id: task.shard_id,
        workflow_id: task.workflow_id,
        run_id: task.run_id,
        scheduled_event_id: task.scheduled_event_id,
        attempt: task.attempt,
        query_id: task.query_id,
    })
}

pub(crate) fn task_to_wire(task: &QueuedTask) -> kairos_proto::node::QueuedTask {
    kairos_proto::node::QueuedTask {
        namespace_id: task.namespace_id.clone(),
        task_queue: task.task_queue.clone(),
        kind: match task.kind {
            TaskKind::Workflow => 1,
            TaskKind::Activity => 2,
        },
        task_id: task.task_id,
        shard_id: task.shard_id,
        workflow_id: task.workflow_id.clone(),
        run_id: task.run_id.clone(),
        scheduled_event_id: task.scheduled_event_id,
        attempt: task.attempt,
        query_id: task.query_id.clone(),
    }
}

#[tonic::async_trait]
impl NodeService for NodeServer {
    async fn forward(
        &self,
        request: Request<ForwardRequest>,
    ) -> Result<Response<ForwardResponse>, Status> {
        let (mut metadata, _, forwarded) = request.into_parts();
        metadata.insert(FORWARDED, MetadataValue::from_static("1"));
        let frontend = self.frontend.as_ref();
        let body = forwarded.request.as_slice();
        let response = serve!(frontend, forwarded.method.as_str(), metadata, body, {
            "StartWorkflowExecution" => start_workflow_execution(StartWorkflowExecutionRequest),
            "SignalWithStartWorkflowExecution" =>
                signal_with_start_workflow_execution(SignalWithStartWorkflowExecutionRequest),
            "ExecuteMultiOperation" => execute_multi_operation(ExecuteMultiOperationRequest),
            "PollWorkflowTaskQueue" => poll_workflow_task_queue(PollWorkflowTaskQueueRequest),
            "PollActivityTaskQueue" => poll_activity_task_queue(PollActivityTaskQueueRequest),
            "RespondWorkflowTaskCompleted" =>
                respond_workflow_task_completed(RespondWorkflowTaskCompletedRequest),
            "RespondWorkflowTaskFailed" =>
                respond_workflow_task_failed(RespondWorkflowTaskFailedRequest),
            "RecordActivityTaskHeartbeat" =>
                record_activity_task_heartbeat(RecordActivityTaskHeartbeatRequest),
            "RecordActivityTaskHeartbeatById" =>
                record_activity_task_heartbeat_by_id(RecordActivityTaskHeartbeatByIdRequest),
            "RespondActivityTaskCompleted" =>
                respond_activity_task_completed(RespondActivityTaskCompletedRequest),
            "RespondActivityTaskCompletedById" =>
                respond_activity_task_completed_by_id(RespondActivityTaskCompletedByIdRequest),
            "RespondActivityTaskFailed" =>
                respond_activity_task_failed(RespondActivityTaskFailedRequest),
            "RespondActivityTaskFailedById" =>
                respond_activity_task_failed_by_id(RespondActivityTaskFailedByIdRequest),
            "RespondActivityTaskCanceled" =>
                respond_activity_task_canceled(RespondActivityTaskCanceledRequest),
            "RespondActivityTaskCanceledById" =>
                respond_activity_task_canceled_by_id(RespondActivityTaskCanceledByIdRequest),
            "GetWorkflowExecutionHistory" =>
                get_workflow_execution_history(GetWorkflowExecutionHistoryRequest),
            "GetWorkflowExecutionHistoryReverse" =>
                get_workflow_execution_history_reverse(GetWorkflowExecutionHistoryReverseRequest),
            "DescribeWorkflowExecution" =>
                describe_workflow_execution(DescribeWorkflowExecutionRequest),
            "RequestCancelWorkflowExecution" =>
                request_cancel_workflow_execution(RequestCancelWorkflowExecutionRequest),
            "QueryWorkflow" => query_workflow(QueryWorkflowRequest),
            "RespondQueryTaskCompleted" =>
                respond_query_task_completed(RespondQueryTaskCompletedRequest),
            "UpdateWorkflowExecution" => update_workflow_execution(UpdateWorkflowExecutionRequest),
            "PollWorkflowExecutionUpdate" =>
                poll_workflow_execution_update(PollWorkflowExecutionUpdateRequest),
            "SignalWorkflowExecution" => signal_workflow_execution(SignalWorkflowExecutionRequest),
            "TerminateWorkflowExecution" =>
                terminate_workflow_execution(TerminateWorkflowExecutionRequest),
            "ResetWorkflowExecution" => reset_workflow_execution(ResetWorkflowExecutionRequest),
            "DeleteWorkflowExecution" => delete_workflow_execution(DeleteWorkflowExecutionRequest),
            "ResetStickyTaskQueue" => reset_sticky_task_queue(ResetStickyTaskQueueRequest),
            "ShutdownWorker" => shutdown_worker(ShutdownWorkerRequest),
            "RecordWorkerHeartbeat" => record_worker_heartbeat(RecordWorkerHeartbeatRequest),
            "ListWorkers" => list_workers(ListWorkersRequest),
            "CountWorkers" => count_workers(CountWorkersRequest),
            "DescribeWorker" => describe_worker(DescribeWorkerRequest),
        });
        Ok(Response::new(ForwardResponse { response }))
    }

    async fn add_task(
        &self,
        request: Request<AddTaskRequest>,
    ) -> Result<Response<AddTaskResponse>, Status> {
        let task = task_from_wire(request.into_inner().task)?;
        // A task for a queue this node does not own (the sender's view is behind, or this
        // node is leaving) goes on to the owner; kept here, no poll would ever see it.
        let owner = match &self.frontend.cluster {
            Some(cluster) => cluster.queue_owner(&task.namespace_id, &task.task_queue),
            None => crate::cluster::Owner::Here,
        };
        match owner {
            crate::cluster::Owner::Here => self.frontend.matching.add_task(task),
            crate::cluster::Owner::There(_) => self.frontend.tasks.add_task(task),
        }
        Ok(Response::new(AddTaskResponse {}))
    }

    async fn describe_node(
        &self,
        _request: Request<DescribeNodeRequest>,
    ) -> Result<Response<DescribeNodeResponse>, Status> {
        let mut shards = self.frontend.engine.held_shards();
        shards.sort_unstable();
        let services = match &self.frontend.cluster {
            Some(cluster) => cluster.me().roles.names(),
            None => crate::cluster::Roles::ALL.names(),
        };
        Ok(Response::new(DescribeNodeResponse { shards, services }))
    }

    async fn apply_run_op(
        &self,
        request: Request<ApplyRunOpRequest>,
    ) -> Result<Response<ApplyRunOpResponse>, Status> {
        let op = kairos_history::engine::RunOp::decode(request.into_inner().op.as_slice())
            .map_err(|e| Status::invalid_argument(format!("undecodable run operation: {e}")))?;
        let outcome = self.frontend.engine.run_op_here(op).await;
        Ok(Response::new(ApplyRunOpResponse {
            outcome: outcome.encode_to_vec(),
        }))
    }

    async fn start_task(
        &self,
        request: Request<StartTaskRequest>,
    ) -> Result<Response<StartTaskResponse>, Status> {
        let req = request.into_inner();
        let task = task_from_wire(req.task)?;
        let frontend = &self.frontend;
        let response = match task.kind {
            TaskKind::Workflow => frontend
                .start_workflow_task_here(&task, &req.identity, &req.build_id)
                .await?
                .map(|answer| answer.encode_to_vec()),
            TaskKind::Activity => frontend
                .start_activity_task_here(&task, &req.identity)
                .await?
                .map(|answer| answer.encode_to_vec()),
        };
        Ok(Response::new(StartTaskResponse {
            started: response.is_some(),
            response: response.unwrap_or_default(),
        }))
    }
}

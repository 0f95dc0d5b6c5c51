//! WorkflowService: the RPCs of the foundation issue; every other RPC answers UNIMPLEMENTED
//! naming itself (generated default stubs).
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kairos_core::ServerOptions;
use kairos_core::api::{Handoff, QueuedTask, TaskKind, TaskSink};
use kairos_core::ids::RunKey;
use kairos_core::wire::PollWorkflowTaskAnswer;
use kairos_history::{Engine, Namespace, Signal};
use kairos_proto::workflowservice::workflow_service_server::WorkflowService;
use temporalio_protos::temporal::api::common::v1::WorkflowExecution;
use temporalio_protos::temporal::api::enums::v1::{
    HistoryEventFilterType, UpdateWorkflowExecutionLifecycleStage, WorkflowExecutionStatus,
};
use temporalio_protos::temporal::api::enums::v1::{QueryRejectCondition, QueryResultType};
use temporalio_protos::temporal::api::history::v1::History;
use temporalio_protos::temporal::api::namespace::v1::{
    NamespaceConfig, NamespaceInfo, namespace_info,
};
use temporalio_protos::temporal::api::query::v1::{QueryRejected, WorkflowQuery};
use temporalio_protos::temporal::api::workflowservice::v1::*;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use crate::cluster::{Cluster, Owner};
use crate::error::{
    invalid, multi_operation_failed, namespace_not_found, query_failed, to_status,
    workflow_not_ready,
};
use crate::forward::{Hop, Route, workflow_id_of};
use crate::{links, validate};
use prost::Message;

/// The reference server version Kairos answers as (GetSystemInfo, GetClusterInfo).
pub(crate) const SERVER_VERSION: &str = "1.29.0";

/// The WorkflowService implementation (cheap clone).
#[derive(Clone)]
pub struct Frontend {
    pub(crate) engine: Engine,
    /// This node's task queues (polls wait here).
    pub(crate) matching: kairos_matching::Handle,
    /// Where tasks this frontend makes (query tasks) go: `matching`, or across the cluster.
    pub(crate) tasks: Arc<dyn TaskSink>,
    /// The cluster this node belongs to, if it does.
    pub(crate) cluster: Option<Arc<Cluster>>,
    pub(crate) options: Arc<ServerOptions>,
    queries: Arc<parking_lot::Mutex<HashMap<String, PendingQuery>>>,
    /// Worker heartbeats (`RecordWorkerHeartbeat`), in memory.
    workers: Arc<crate::workers::Registry>,
}

/// A query waiting for a worker's answer. Queries are not durable (as in the reference): one
/// that outlives its caller's deadline, or the process, is simply gone.
struct PendingQuery {
    key: RunKey,
    query: WorkflowQuery,
    answer: Option<oneshot::Sender<RespondQueryTaskCompletedRequest>>,
    /// Attached to the workflow task with this started event id (its answer comes with the
    /// task's completion); 0 when not attached.
    attached_to: i64,
    /// Sent as a query task of its own: never attached to a workflow task any more.
    dispatched: bool,
}

type Reply<T> = Result<Response<T>, Status>;

/// Gives a task back to matching if the poll that took it ends before history recorded it.
struct Redeliver<'a> {
    /// The task router: the queue may have moved to another node while the start ran.
    matching: &'a dyn TaskSink,
    task: Option<QueuedTask>,
}

impl Drop for Redeliver<'_> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            tracing::debug!(workflow_id = %task.workflow_id, scheduled_event_id = task.scheduled_event_id, "poll ended before its task was recorded as started; task goes back to matching");
            self.matching.add_task(task);
        }
    }
}

/// The deadline a client set on its call (`grpc-timeout`), if any.
pub(crate) fn grpc_timeout<T>(request: &Request<T>) -> Option<Duration> {
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// How much sooner than its caller's deadline a long poll answers (empty), so the answer
/// arrives before the caller gives up, as the reference answers.
const LONG_POLL_TAIL: Duration = Duration::from_secs(1);

/// The shortest deadline a task-queue poll accepts (the reference's minimum).
const MIN_POLL_DEADLINE: Duration = Duration::from_secs(2);

/// How long a task-queue poll may wait: `cap`, or up to a second before the caller's deadline
/// when that comes sooner; a deadline under two seconds is refused as the reference refuses it.
fn poll_budget<T>(request: &Request<T>, cap: Duration) -> Result<Duration, Status> {
    match grpc_timeout(request) {
        None => Ok(cap),
        // At exactly two seconds, the reference has already used some of them by the time it
        // checks, and refuses.
        Some(t) if t <= MIN_POLL_DEADLINE => {
            Err(Status::failed_precondition("Context timeout is too short."))
        }
        Some(t) => Ok(cap.min(t - LONG_POLL_TAIL)),
    }
}

/// How long an update call waits for its stage: 20 s (as the reference), or less when the
/// caller's deadline is nearer, so the answer (the stage reached so far) arrives in time.
fn update_deadline<T>(request: &Request<T>) -> tokio::time::Instant {
    let cap = Duration::from_secs(20);
    let wait = grpc_timeout(request).map_or(cap, |t| (t.mul_f64(0.9)).min(cap));
    tokio::time::Instant::now() + wait
}

/// The stage a poll for an update's outcome waits for: its wait policy's, or none at all when
/// it has none (the answer is the update's stage now, as the reference answers).
fn poll_stage(policy: Option<&temporalio_protos::temporal::api::update::v1::WaitPolicy>) -> i32 {
    use UpdateWorkflowExecutionLifecycleStage as S;
    match policy.map(|p| p.lifecycle_stage) {
        Some(s) if s == S::Accepted as i32 || s == S::Completed as i32 => s,
        _ => S::Admitted as i32,
    }
}

/// The reason a termination records: the caller's, or the reference's words when it gave none.
fn terminate_reason(reason: &str) -> &str {
    if reason.is_empty() {
        "terminated by user via frontend"
    } else {
        reason
    }
}

/// The stage a caller waits for: its wait policy, COMPLETED when unset.
fn wanted_stage(policy: Option<&temporalio_protos::temporal::api::update::v1::WaitPolicy>) -> i32 {
    use temporalio_protos::temporal::api::enums::v1::UpdateWorkflowExecutionLifecycleStage as S;
    match policy.map(|p| p.lifecycle_stage) {
        Some(s) if s == S::Accepted as i32 || s == S::Admitted as i32 => S::Accepted as i32,
        _ => S::Completed as i32,
    }
}

fn update_ref(
    key: &RunKey,
    update_id: &str,
) -> temporalio_protos::temporal::api::update::v1::UpdateRef {
    temporalio_protos::temporal::api::update::v1::UpdateRef {
        workflow_execution: Some(WorkflowExecution {
            workflow_id: key.workflow_id.clone(),
            run_id: key.run_id.clone(),
        }),
        update_id: update_id.to_string(),
    }
}

fn query_timed_out() -> Status {
    Status::deadline_exceeded("query timed out before a worker answered it")
}

fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Frontend {
    pub(crate) fn new(
        engine: Engine,
        matching: kairos_matching::Handle,
        cluster: Option<Arc<Cluster>>,
        options: Arc<ServerOptions>,
    ) -> Self {
        Self {
            engine,
            tasks: Arc::new(crate::tasks::TaskRouter::new(
                matching.clone(),
                cluster.clone(),
            )),
            matching,
            cluster,
            workers: Arc::new(crate::workers::Registry::new(
                options.worker_heartbeat_ttl,
                options.worker_heartbeat_max_entries,
            )),
            options,
            queries: Default::default(),
        }
    }

    pub(crate) fn namespace(&self, name: &str) -> Result<Arc<Namespace>, Status> {
        if name.is_empty() {
            return Err(invalid("Namespace is not set on request."));
        }
        self.engine
            .namespaces()
            .get(name)
            .map_err(|_| namespace_not_found(name))
    }

    fn execution(&self, execution: Option<&WorkflowExecution>) -> Result<(String, String), Status> {
        let execution = execution.ok_or_else(|| invalid("Execution is not set on request."))?;
        validate::required_id(&self.options.limits, "WorkflowId", &execution.workflow_id)?;
        if !execution.run_id.is_empty() && uuid::Uuid::parse_str(&execution.run_id).is_err() {
            return Err(invalid("Invalid RunId."));
        }
        Ok((execution.workflow_id.clone(), execution.run_id.clone()))
    }

    /// Checks a start request (also the start half of signal-with-start) and fills its
    /// request id.
    fn validate_start(&self, req: &mut StartWorkflowExecutionRequest) -> Result<(), Status> {
        let limits = &self.options.limits;
        validate::required_id(limits, "WorkflowId", &req.workflow_id)?;
        let workflow_type = req
            .workflow_type
            .as_ref()
            .map(|t| t.name.as_str())
            .unwrap_or_default();
        validate::required_id(limits, "WorkflowType", workflow_type)?;
        let task_queue = req
            .task_queue
            .as_ref()
            .map(|q| q.name.as_str())
            .unwrap_or_default();
        validate::required_id(limits, "TaskQueue", task_queue)?;
        validate::optional_id(limits, "RequestId", &req.request_id)?;
        validate::timeout(
            "WorkflowExecutionTimeout",
            req.workflow_execution_timeout.as_ref(),
        )?;
        validate::timeout("WorkflowRunTimeout", req.workflow_run_timeout.as_ref())?;
        validate::timeout("WorkflowTaskTimeout", req.workflow_task_timeout.as_ref())?;
        validate::timeout("WorkflowStartDelay", req.workflow_start_delay.as_ref())?;
        validate::retry_policy(req.retry_policy.as_ref())?;
        validate::payloads(limits, "Input", req.input.as_ref())?;
        validate::memo(limits, req.memo.as_ref())?;
        if !req.cron_schedule.is_empty() {
            if let Err(e) = kairos_history::cron::CronSchedule::parse(&req.cron_schedule) {
                return Err(invalid(format!("Invalid CronSchedule: {e}.")));
            }
            if req
                .workflow_start_delay
                .as_ref()
                .is_some_and(|d| d.seconds != 0 || d.nanos != 0)
            {
                return Err(invalid(
                    "CronSchedule and WorkflowStartDelay may not be used together.",
                ));
            }
        }
        if req.request_id.is_empty() {
            req.request_id = request_id();
        }
        Ok(())
    }

    /// The legacy open/closed lists, as a query of the list language: the status term, the
    /// optional filter term and the start-time bounds.
    async fn legacy_list(
        &self,
        namespace: &str,
        status: &str,
        filter: Option<String>,
        start: Option<&temporalio_protos::temporal::api::filter::v1::StartTimeFilter>,
        page_size: i32,
        token: &[u8],
    ) -> Result<
        (
            Vec<temporalio_protos::temporal::api::workflow::v1::WorkflowExecutionInfo>,
            Vec<u8>,
        ),
        Status,
    > {
        let ns = self.namespace(namespace)?;
        let mut terms = vec![status.to_string()];
        terms.extend(start_time_terms(start));
        terms.extend(filter);
        self.engine
            .list_workflows(&ns, &terms.join(" AND "), page_size, token)
            .await
            .map_err(to_status)
    }

    /// Gets a query (registered under `query_id`) answered: by the workflow task it gets
    /// attached to, or by a query task of its own once no workflow task is pending.
    async fn deliver_query(
        &self,
        ns: &Namespace,
        key: &RunKey,
        query_id: &str,
        rx: &mut oneshot::Receiver<RespondQueryTaskCompletedRequest>,
        deadline: tokio::time::Instant,
    ) -> Result<RespondQueryTaskCompletedRequest, Status> {
        let mut changes = self.engine.watch(key);
        loop {
            let state = self.engine.read_state(key).await.map_err(to_status)?;
            let in_flight = state.wft.as_ref().map_or(0, |w| w.started_event_id);
            let send_task = {
                let mut queries = self.queries.lock();
                let Some(pending) = queries.get_mut(query_id) else {
                    return Err(query_timed_out());
                };
                if pending.attached_to != 0 && pending.attached_to != in_flight {
                    // The task that carried it ended without an answer (failed, timed out):
                    // it waits for the next one.
                    pending.attached_to = 0;
                }
                let closed = state.status != WorkflowExecutionStatus::Running as i32;
                let send = pending.attached_to == 0
                    && !pending.dispatched
                    && (closed || state.wft.is_none());
                if send {
                    pending.dispatched = true;
                }
                send
            };
            if send_task {
                let sticky = !state.sticky_task_queue.is_empty()
                    && self.tasks.has_recent_poller(
                        &ns.id,
                        &state.sticky_task_queue,
                        TaskKind::Workflow,
                    );
                self.tasks.add_task(QueuedTask {
                    namespace_id: ns.id.clone(),
                    task_queue: if sticky {
                        state.sticky_task_queue.clone()
                    } else {
                        state.task_queue.clone()
                    },
                    kind: TaskKind::Workflow,
                    task_id: 0,
                    shard_id: 0,
                    workflow_id: key.workflow_id.clone(),
                    run_id: key.run_id.clone(),
                    scheduled_event_id: 0,
                    attempt: 1,
                    query_id: query_id.to_string(),
                });
            }
            tokio::select! {
                answer = &mut *rx => return answer.map_err(|_| query_timed_out()),
                changed = changes.changed(), if !send_task => {
                    if changed.is_err() {
                        changes = self.engine.watch(key);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return Err(query_timed_out()),
            }
            if send_task {
                // A query task is out: only its answer (or the deadline) ends the wait.
                return tokio::select! {
                    answer = &mut *rx => answer.map_err(|_| query_timed_out()),
                    _ = tokio::time::sleep_until(deadline) => Err(query_timed_out()),
                };
            }
        }
    }

    /// The last touches on a started workflow task before it goes to the poller: the queries
    /// waiting on its run, and the task queue name as the worker knows it.
    fn finish_workflow_task(
        &self,
        mut answer: PollWorkflowTaskAnswer,
        namespace_id: &str,
    ) -> PollWorkflowTaskAnswer {
        self.attach_queries(&mut answer.response, namespace_id);
        if let Some(tq) = answer.response.workflow_execution_task_queue.as_mut() {
            tq.name = response_task_queue(tq.name.clone());
        }
        answer
    }

    /// Attaches the queries waiting on this run to the workflow task a poller just started.
    fn attach_queries(&self, response: &mut PollWorkflowTaskQueueResponse, namespace_id: &str) {
        let Some(execution) = response.workflow_execution.as_ref() else {
            return;
        };
        let mut queries = self.queries.lock();
        for (id, q) in queries.iter_mut() {
            if q.attached_to == 0
                && !q.dispatched
                && q.key.namespace_id == namespace_id
                && q.key.workflow_id == execution.workflow_id
                && q.key.run_id == execution.run_id
            {
                q.attached_to = response.started_event_id;
                response.queries.insert(id.clone(), q.query.clone());
            }
        }
    }

    /// Hands the answers a workflow task completion carries to the queries that wait for them.
    fn answer_attached_queries(
        &self,
        results: &HashMap<String, temporalio_protos::temporal::api::query::v1::WorkflowQueryResult>,
    ) {
        if results.is_empty() {
            return;
        }
        let mut queries = self.queries.lock();
        for (id, result) in results {
            if let Some(sender) = queries.get_mut(id).and_then(|q| q.answer.take()) {
                let _ = sender.send(RespondQueryTaskCompletedRequest {
                    completed_type: result.result_type,
                    query_result: result.answer.clone(),
                    error_message: result.error_message.clone(),
                    failure: result.failure.clone(),
                    ..Default::default()
                });
            }
        }
    }

    /// Refuses search attributes the namespace does not know (neither registered nor
    /// predefined), as the reference does.
    fn check_search_attributes(
        &self,
        ns: &Namespace,
        sa: Option<&temporalio_protos::temporal::api::common::v1::SearchAttributes>,
    ) -> Result<(), Status> {
        for name in sa.map(|s| s.indexed_fields.keys()).into_iter().flatten() {
            let known = ns.custom_search_attributes.contains_key(name)
                || kairos_visibility::attrs::predefined(name).is_some();
            if !known {
                return Err(invalid(format!(
                    "Namespace {} has no mapping defined for search attribute {name}",
                    ns.name
                )));
            }
        }
        Ok(())
    }

    /// Who holds the run a queued task belongs to.
    fn run_owner(&self, task: &QueuedTask) -> Owner {
        match &self.cluster {
            Some(cluster) => cluster.run_owner(&task.namespace_id, &task.workflow_id),
            None => Owner::Here,
        }
    }

    /// Starts a queued workflow task of a run this node holds (or, for a query task, reads the
    /// query it carries from the registry): the poll's answer, `None` when the task is moot.
    pub(crate) async fn start_workflow_task_here(
        &self,
        task: &QueuedTask,
        identity: &str,
        build_id: &str,
    ) -> Result<Option<PollWorkflowTaskAnswer>, Status> {
        if !task.query_id.is_empty() {
            // A query task: answered from the registry, never recorded in the run.
            let pending = self
                .queries
                .lock()
                .get(&task.query_id)
                .map(|q| (q.key.clone(), q.query.clone()));
            let Some((key, query)) = pending else {
                return Ok(None); // its caller gave up
            };
            let response = self
                .engine
                .query_task(&key, &task.query_id, query)
                .await
                .map_err(to_status)?;
            return Ok(Some(response));
        }
        let started = self
            .engine
            .record_workflow_task_started(task, (identity, build_id), &request_id())
            .await
            .map_err(to_status)?;
        Ok(started.map(|response| self.finish_workflow_task(response, &task.namespace_id)))
    }

    /// Starts a queued activity task of a run this node holds: the poll's answer, `None` when
    /// the task is moot.
    pub(crate) async fn start_activity_task_here(
        &self,
        task: &QueuedTask,
        identity: &str,
    ) -> Result<Option<PollActivityTaskQueueResponse>, Status> {
        self.engine
            .record_activity_task_started(task, identity, &request_id())
            .await
            .map_err(to_status)
    }

    /// Has the node holding a queued task's run start it (`NodeService.StartTask`): the poll's
    /// answer, `None` when the task is moot.
    async fn start_task_there<T: Message + Default>(
        &self,
        node: &crate::cluster::Node,
        task: &QueuedTask,
        identity: &str,
        build_id: &str,
    ) -> Result<Option<T>, Status> {
        let cluster = self.cluster.as_ref().expect("a remote run needs a cluster");
        let mut peer = cluster.peer(node)?;
        let start = peer.start_task(kairos_proto::node::StartTaskRequest {
            task: Some(crate::node::task_to_wire(task)),
            identity: identity.to_string(),
            build_id: build_id.to_string(),
        });
        let moved = cluster.until_moved(|| self.run_owner(task) == Owner::There(node.clone()));
        let answer = tokio::select! {
            answer = start => answer?.into_inner(),
            () = moved => {
                return Err(Status::unavailable(format!("node {} left the cluster", node.name)));
            }
        };
        if !answer.started {
            return Ok(None);
        }
        T::decode(answer.response.as_slice())
            .map(Some)
            .map_err(|e| {
                Status::internal(format!("node {} sent an undecodable task: {e}", node.name))
            })
    }

    async fn run_key(
        &self,
        ns: &Namespace,
        execution: Option<&WorkflowExecution>,
    ) -> Result<RunKey, Status> {
        let (workflow_id, run_id) = self.execution(execution)?;
        self.engine
            .resolve_run(ns, &workflow_id, &run_id)
            .await
            .map_err(to_status)
    }

    /// Checks an update request; returns its id.
    fn validate_update(
        &self,
        update: &temporalio_protos::temporal::api::update::v1::Request,
    ) -> Result<String, Status> {
        let limits = &self.options.limits;
        let update_id = update
            .meta
            .as_ref()
            .map(|m| m.update_id.clone())
            .unwrap_or_default();
        validate::required_id(limits, "UpdateId", &update_id)?;
        let input = update
            .input
            .as_ref()
            .ok_or_else(|| invalid("Update input is not set on request."))?;
        validate::required_id(limits, "UpdateName", &input.name)?;
        validate::payloads(limits, "Args", input.args.as_ref())?;
        Ok(update_id)
    }

    /// Admits an update and waits for the stage its caller asked for.
    async fn run_update(
        &self,
        key: &RunKey,
        update: temporalio_protos::temporal::api::update::v1::Request,
        wait_policy: Option<&temporalio_protos::temporal::api::update::v1::WaitPolicy>,
        deadline: tokio::time::Instant,
    ) -> Result<UpdateWorkflowExecutionResponse, Status> {
        let update_id = self.validate_update(&update)?;
        let wanted = wanted_stage(wait_policy);
        self.engine
            .admit_update(key, update)
            .await
            .map_err(to_status)?;
        let info = self
            .engine
            .wait_update(key, &update_id, wanted, deadline)
            .await
            .map_err(to_status)?;
        Ok(UpdateWorkflowExecutionResponse {
            update_ref: Some(update_ref(key, &update_id)),
            outcome: info
                .outcome
                .filter(|_| info.stage >= wanted || info.rejected),
            stage: info.stage,
            ..Default::default()
        })
    }

    fn describe_namespace_response(&self, ns: &Namespace) -> DescribeNamespaceResponse {
        let mut info = ns.info.clone();
        info.capabilities = Some(namespace_info::Capabilities {
            eager_workflow_start: self.options.eager_workflow_start,
            sync_update: true,
            async_update: true,
            worker_heartbeats: true,
            ..Default::default()
        });
        info.limits = Some(namespace_info::Limits {
            blob_size_limit_error: self.options.limits.blob_size as i64,
            memo_size_limit_error: self.options.limits.memo_size as i64,
            ..Default::default()
        });
        // One cluster, always active (clients, the `temporal` CLI among them, read it).
        let replication =
            temporalio_protos::temporal::api::replication::v1::NamespaceReplicationConfig {
                active_cluster_name: "active".to_string(),
                clusters: vec![
                    temporalio_protos::temporal::api::replication::v1::ClusterReplicationConfig {
                        cluster_name: "active".to_string(),
                        ..Default::default()
                    },
                ],
                state: temporalio_protos::temporal::api::enums::v1::ReplicationState::Normal as i32,
            };
        DescribeNamespaceResponse {
            namespace_info: Some(info),
            config: Some(ns.config.clone()),
            replication_config: Some(replication),
            is_global_namespace: false,
            ..Default::default()
        }
    }

    fn poll_timeout(&self) -> Duration {
        self.options.long_poll_timeout
    }
}

#[tonic::async_trait]
impl WorkflowService for Frontend {
    async fn get_system_info(
        &self,
        _request: Request<GetSystemInfoRequest>,
    ) -> Reply<GetSystemInfoResponse> {
        Ok(Response::new(GetSystemInfoResponse {
            server_version: SERVER_VERSION.into(),
            capabilities: Some(get_system_info_response::Capabilities {
                signal_and_query_header: true,
                internal_error_differentiation: false,
                activity_failure_include_heartbeat: true,
                supports_schedules: false,
                encoded_failure_attributes: true,
                // What makes the SDKs send their build id in worker_version_capabilities and
                // worker_version_stamp (recorded on the workflow task events, read back on
                // replay), as they do against the reference.
                build_id_based_versioning: true,
                upsert_memo: true,
                eager_workflow_start: true,
                sdk_metadata: true,
                count_group_by_execution_status: false,
                nexus: false,
                ..Default::default()
            }),
        }))
    }

    async fn get_cluster_info(
        &self,
        _request: Request<GetClusterInfoRequest>,
    ) -> Reply<GetClusterInfoResponse> {
        let (cluster_id, store) = self.engine.cluster().await.map_err(to_status)?;
        // The client versions the reference says it supports (the CLI and SDKs may check).
        let supported_clients = [
            ("temporal-cli", "<2.0.0"),
            ("temporal-go", "<2.0.0"),
            ("temporal-java", "<2.0.0"),
            ("temporal-php", "<2.0.0"),
            ("temporal-server", "<2.0.0"),
            ("temporal-typescript", "<2.0.0"),
            ("temporal-ui", "<3.0.0"),
            ("Nexus-go-sdk", "<2.0.0"),
        ]
        .into_iter()
        .map(|(client, versions)| (client.to_string(), versions.to_string()))
        .collect();
        Ok(Response::new(GetClusterInfoResponse {
            supported_clients,
            server_version: SERVER_VERSION.into(),
            cluster_id,
            version_info: None,
            cluster_name: "active".into(),
            history_shard_count: self.options.shard_count,
            persistence_store: store.into(),
            visibility_store: store.into(),
            initial_failover_version: 1,
            failover_version_increment: 10,
        }))
    }

    async fn register_namespace(
        &self,
        request: Request<RegisterNamespaceRequest>,
    ) -> Reply<RegisterNamespaceResponse> {
        let req = request.into_inner();
        validate::required_id(&self.options.limits, "Namespace", &req.namespace)?;
        validate::timeout(
            "WorkflowExecutionRetentionPeriod",
            req.workflow_execution_retention_period.as_ref(),
        )?;
        let retention =
            kairos_core::time::from_pb_duration(req.workflow_execution_retention_period.as_ref());
        let retention = if retention.is_zero() {
            self.options.default_retention
        } else {
            retention
        };
        self.engine
            .namespaces()
            .register(
                &req.namespace,
                &req.description,
                &req.owner_email,
                retention,
                req.data,
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(RegisterNamespaceResponse {}))
    }

    async fn describe_namespace(
        &self,
        request: Request<DescribeNamespaceRequest>,
    ) -> Reply<DescribeNamespaceResponse> {
        let req = request.into_inner();
        let ns = if !req.id.is_empty() {
            self.engine
                .namespaces()
                .get_by_id(&req.id)
                .ok_or_else(|| namespace_not_found(&req.id))?
        } else {
            self.namespace(&req.namespace)?
        };
        Ok(Response::new(self.describe_namespace_response(&ns)))
    }

    async fn list_namespaces(
        &self,
        _request: Request<ListNamespacesRequest>,
    ) -> Reply<ListNamespacesResponse> {
        let namespaces = self
            .engine
            .namespaces()
            .list()
            .iter()
            .map(|ns| self.describe_namespace_response(ns))
            .collect();
        Ok(Response::new(ListNamespacesResponse {
            namespaces,
            next_page_token: Vec::new(),
        }))
    }

    async fn update_namespace(
        &self,
        request: Request<UpdateNamespaceRequest>,
    ) -> Reply<UpdateNamespaceResponse> {
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        let mut info: NamespaceInfo = ns.info.clone();
        let mut config: NamespaceConfig = ns.config.clone();
        if let Some(update) = &req.update_info {
            if !update.description.is_empty() {
                info.description = update.description.clone();
            }
            if !update.owner_email.is_empty() {
                info.owner_email = update.owner_email.clone();
            }
            for (k, v) in &update.data {
                info.data.insert(k.clone(), v.clone());
            }
        }
        if let Some(update) = &req.config {
            validate::timeout(
                "WorkflowExecutionRetentionPeriod",
                update.workflow_execution_retention_ttl.as_ref(),
            )?;
            if update.workflow_execution_retention_ttl.is_some() {
                config.workflow_execution_retention_ttl = update.workflow_execution_retention_ttl;
            }
        }
        let ns = self
            .engine
            .namespaces()
            .update(info, config)
            .await
            .map_err(to_status)?;
        let described = self.describe_namespace_response(&ns);
        Ok(Response::new(UpdateNamespaceResponse {
            namespace_info: described.namespace_info,
            config: described.config,
            ..Default::default()
        }))
    }

    async fn start_workflow_execution(
        &self,
        request: Request<StartWorkflowExecutionRequest>,
    ) -> Reply<StartWorkflowExecutionResponse> {
        let hop = Hop::of(&request);
        let mut req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        self.validate_start(&mut req)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::run(&ns.id, &req.workflow_id),
                "StartWorkflowExecution",
            )
            .await
        {
            return reply;
        }
        self.check_search_attributes(&ns, req.search_attributes.as_ref())?;
        let outcome = self
            .engine
            .start_workflow(&ns, &req)
            .await
            .map_err(to_status)?;
        Ok(Response::new(StartWorkflowExecutionResponse {
            link: Some(links::started(&ns.name, &req.workflow_id, &outcome.run_id)),
            run_id: outcome.run_id,
            started: outcome.started,
            status: WorkflowExecutionStatus::Running as i32,
            eager_workflow_task: outcome.eager_task.map(|t| *t),
            ..Default::default()
        }))
    }

    async fn poll_workflow_task_queue(
        &self,
        request: Request<PollWorkflowTaskQueueRequest>,
    ) -> Reply<PollWorkflowTaskAnswer> {
        let hop = Hop::of(&request);
        let budget = poll_budget(&request, self.poll_timeout())?;
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        let queue = req
            .task_queue
            .as_ref()
            .map(|q| q.name.clone())
            .unwrap_or_default();
        validate::required_id(&self.options.limits, "TaskQueue", &queue)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::queue(&ns.id, &queue),
                "PollWorkflowTaskQueue",
            )
            .await
        {
            return reply;
        }
        // The build id a started task records (its WorkflowTaskStarted `worker_version`), as
        // the reference takes it: from the poll's capabilities, unless the worker uses
        // deployment-based versioning. (The field is deprecated; the SDKs still send it.)
        #[allow(deprecated)]
        let build_id = match (&req.worker_version_capabilities, &req.deployment_options) {
            (Some(capabilities), None) => capabilities.build_id.clone(),
            _ => String::new(),
        };
        let deadline = tokio::time::Instant::now() + budget;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Ok(Response::new(PollWorkflowTaskAnswer::default()));
            }
            let task = match self
                .matching
                .poll(
                    &ns.id,
                    &queue,
                    TaskKind::Workflow,
                    remaining,
                    &req.identity,
                    &build_id,
                )
                .await
            {
                Some(Handoff::Task(task)) => task,
                Some(Handoff::Workflow(response)) => {
                    // Started for this poll by the transition that scheduled it.
                    return Ok(Response::new(self.finish_workflow_task(*response, &ns.id)));
                }
                _ => return Ok(Response::new(PollWorkflowTaskAnswer::default())),
            };
            let mut guard = Redeliver {
                matching: self.tasks.as_ref(),
                task: task.query_id.is_empty().then(|| task.clone()),
            };
            let started = match self.run_owner(&task) {
                Owner::Here => {
                    self.start_workflow_task_here(&task, &req.identity, &build_id)
                        .await
                }
                Owner::There(node) => {
                    self.start_task_there(&node, &task, &req.identity, &build_id)
                        .await
                }
            };
            match started {
                Ok(Some(answer)) => {
                    guard.task = None;
                    return Ok(Response::new(answer));
                }
                Ok(None) => guard.task = None,
                Err(e) => return Err(e),
            }
        }
    }

    async fn respond_workflow_task_completed(
        &self,
        request: Request<RespondWorkflowTaskCompletedRequest>,
    ) -> Reply<RespondWorkflowTaskCompletedResponse> {
        let hop = Hop::of(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::Token(&req.task_token),
                "RespondWorkflowTaskCompleted",
            )
            .await
        {
            return reply;
        }
        self.answer_attached_queries(&req.query_results);
        let response = self
            .engine
            .respond_workflow_task_completed(&ns, &req)
            .await
            .map_err(to_status)?;
        Ok(Response::new(response))
    }

    async fn respond_workflow_task_failed(
        &self,
        request: Request<RespondWorkflowTaskFailedRequest>,
    ) -> Reply<RespondWorkflowTaskFailedResponse> {
        let hop = Hop::of(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::Token(&req.task_token),
                "RespondWorkflowTaskFailed",
            )
            .await
        {
            return reply;
        }
        self.engine
            .respond_workflow_task_failed(&ns, &req)
            .await
            .map_err(to_status)?;
        Ok(Response::new(RespondWorkflowTaskFailedResponse {}))
    }

    async fn poll_activity_task_queue(
        &self,
        request: Request<PollActivityTaskQueueRequest>,
    ) -> Reply<PollActivityTaskQueueResponse> {
        let hop = Hop::of(&request);
        let budget = poll_budget(&request, self.poll_timeout())?;
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        let queue = req
            .task_queue
            .as_ref()
            .map(|q| q.name.clone())
            .unwrap_or_default();
        validate::required_id(&self.options.limits, "TaskQueue", &queue)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::queue(&ns.id, &queue),
                "PollActivityTaskQueue",
            )
            .await
        {
            return reply;
        }
        let deadline = tokio::time::Instant::now() + budget;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Ok(Response::new(PollActivityTaskQueueResponse::default()));
            }
            let task = match self
                .matching
                .poll(
                    &ns.id,
                    &queue,
                    TaskKind::Activity,
                    remaining,
                    &req.identity,
                    "",
                )
                .await
            {
                Some(Handoff::Task(task)) => task,
                Some(Handoff::Activity(response)) => return Ok(Response::new(*response)),
                _ => return Ok(Response::new(PollActivityTaskQueueResponse::default())),
            };
            let mut guard = Redeliver {
                matching: self.tasks.as_ref(),
                task: Some(task.clone()),
            };
            let started = match self.run_owner(&task) {
                Owner::Here => self.start_activity_task_here(&task, &req.identity).await,
                Owner::There(node) => self.start_task_there(&node, &task, &req.identity, "").await,
            };
            match started {
                Ok(Some(response)) => {
                    guard.task = None;
                    return Ok(Response::new(response));
                }
                Ok(None) => guard.task = None,
                Err(e) => return Err(e),
            }
        }
    }

    async fn record_activity_task_heartbeat(
        &self,
        request: Request<RecordActivityTaskHeartbeatRequest>,
    ) -> Reply<RecordActivityTaskHeartbeatResponse> {
        let hop = Hop::of(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::Token(&req.task_token),
                "RecordActivityTaskHeartbeat",
            )
            .await
        {
            return reply;
        }
        validate::payloads(&self.options.limits, "Details", req.details.as_ref())?;
        let target = self
            .engine
            .activity_token(&ns, &req.task_token)
            .map_err(to_status)?;
        let cancel_requested = self
            .engine
            .update_activity(&target, |t| {
                t.heartbeat_activity(
                    target.scheduled_event_id,
                    target.attempt,
                    req.details.clone(),
                )
            })
            .await
            .map_err(to_status)?;
        Ok(Response::new(RecordActivityTaskHeartbeatResponse {
            cancel_requested,
            ..Default::default()
        }))
    }

    async fn record_activity_task_heartbeat_by_id(
        &self,
        request: Request<RecordActivityTaskHeartbeatByIdRequest>,
    ) -> Reply<RecordActivityTaskHeartbeatByIdResponse> {
        let hop = Hop::of(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::run(&ns.id, &req.workflow_id),
                "RecordActivityTaskHeartbeatById",
            )
            .await
        {
            return reply;
        }
        validate::payloads(&self.options.limits, "Details", req.details.as_ref())?;
        let target = self
            .engine
            .activity_by_id(&ns, &req.workflow_id, &req.run_id, &req.activity_id)
            .await
            .map_err(to_status)?;
        let cancel_requested = self
            .engine
            .update_activity(&target, |t| {
                t.heartbeat_activity(
                    target.scheduled_event_id,
                    target.attempt,
                    req.details.clone(),
                )
            })
            .await
            .map_err(to_status)?;
        Ok(Response::new(RecordActivityTaskHeartbeatByIdResponse {
            cancel_requested,
            ..Default::default()
        }))
    }

    async fn respond_activity_task_completed(
        &self,
        request: Request<RespondActivityTaskCompletedRequest>,
    ) -> Reply<RespondActivityTaskCompletedResponse> {
        let hop = Hop::of(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::Token(&req.task_token),
                "RespondActivityTaskCompleted",
            )
            .await
        {
            return reply;
        }
        validate::payloads(&self.options.limits, "Result", req.result.as_ref())?;
        let target = self
            .engine
            .activity_token(&ns, &req.task_token)
            .map_err(to_status)?;
        self.engine
            .update_activity(&target, |t| {
                t.complete_activity(
                    target.scheduled_event_id,
                    target.attempt,
                    req.result.clone(),
                    &req.identity,
                )
            })
            .await
            .map_err(to_status)?;
        Ok(Response::new(
            RespondActivityTaskCompletedResponse::default(),
        ))
    }

    async fn respond_activity_task_completed_by_id(
        &self,
        request: Request<RespondActivityTaskCompletedByIdRequest>,
    ) -> Reply<RespondActivityTaskCompletedByIdResponse> {
        let hop = Hop::of(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::run(&ns.id, &req.workflow_id),
                "RespondActivityTaskCompletedById",
            )
            .await
        {
            return reply;
        }
        validate::payloads(&self.options.limits, "Result", req.result.as_ref())?;
        let target = self
            .engine
            .activity_by_id(&ns, &req.workflow_id, &req.run_id, &req.activity_id)
            .await
            .map_err(to_status)?;
        self.engine
            .update_activity(&target, |t| {
                t.complete_activity(
                    target.scheduled_event_id,
                    target.attempt,
                    req.result.clone(),
                    &req.identity,
                )
            })
            .await
            .map_err(to_status)?;
        Ok(Response::new(
            RespondActivityTaskCompletedByIdResponse::default(),
        ))
    }

    async fn respond_activity_task_failed(
        &self,
        request: Request<RespondActivityTaskFailedRequest>,
    ) -> Reply<RespondActivityTaskFailedResponse> {
        let hop = Hop::of(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::Token(&req.task_token),
                "RespondActivityTaskFailed",
            )
            .await
        {
            return reply;
        }
        let failure = req
            .failure
            .clone()
            .ok_or_else(|| invalid("Failure is not set on request."))?;
        let target = self
            .engine
            .activity_token(&ns, &req.task_token)
            .map_err(to_status)?;
        self.engine
            .update_activity(&target, |t| {
                t.fail_activity(
                    target.scheduled_event_id,
                    target.attempt,
                    failure,
                    req.last_heartbeat_details.clone(),
                    &req.identity,
                )
            })
            .await
            .map_err(to_status)?;
        Ok(Response::new(RespondActivityTaskFailedResponse::default()))
    }

    async fn respond_activity_task_failed_by_id(
        &self,
        request: Request<RespondActivityTaskFailedByIdRequest>,
    ) -> Reply<RespondActivityTaskFailedByIdResponse> {
        let hop = Hop::of(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::run(&ns.id, &req.workflow_id),
                "RespondActivityTaskFailedById",
            )
            .await
        {
            return reply;
        }
        let failure = req
            .failure
            .clone()
            .ok_or_else(|| invalid("Failure is not set on request."))?;
        let target = self
            .engine
            .activity_by_id(&ns, &req.workflow_id, &req.run_id, &req.activity_id)
            .await
            .map_err(to_status)?;
        self.engine
            .update_activity(&target, |t| {
                t.fail_activity(
                    target.scheduled_event_id,
                    target.attempt,
                    failure,
                    req.last_heartbeat_details.clone(),
                    &req.identity,
                )
            })
            .await
            .map_err(to_status)?;
        Ok(Response::new(
            RespondActivityTaskFailedByIdResponse::default(),
        ))
    }

    async fn respond_activity_task_canceled(
        &self,
        request: Request<RespondActivityTaskCanceledRequest>,
    ) -> Reply<RespondActivityTaskCanceledResponse> {
        let hop = Hop::of(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::Token(&req.task_token),
                "RespondActivityTaskCanceled",
            )
            .await
        {
            return reply;
        }
        let target = self
            .engine
            .activity_token(&ns, &req.task_token)
            .map_err(to_status)?;
        self.engine
            .update_activity(&target, |t| {
                t.cancel_activity(
                    target.scheduled_event_id,
                    target.attempt,
                    req.details.clone(),
                    &req.identity,
                )
            })
            .await
            .map_err(to_status)?;
        Ok(Response::new(RespondActivityTaskCanceledResponse::default()))
    }

    async fn respond_activity_task_canceled_by_id(
        &self,
        request: Request<RespondActivityTaskCanceledByIdRequest>,
    ) -> Reply<RespondActivityTaskCanceledByIdResponse> {
        let hop = Hop::of(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::run(&ns.id, &req.workflow_id),
                "RespondActivityTaskCanceledById",
            )
            .await
        {
            return reply;
        }
        let target = self
            .engine
            .activity_by_id(&ns, &req.workflow_id, &req.run_id, &req.activity_id)
            .await
            .map_err(to_status)?;
        self.engine
            .update_activity(&target, |t| {
                t.cancel_activity(
                    target.scheduled_event_id,
                    target.attempt,
                    req.details.clone(),
                    &req.identity,
                )
            })
            .await
            .map_err(to_status)?;
        Ok(Response::new(
            RespondActivityTaskCanceledByIdResponse::default(),
        ))
    }

    async fn get_workflow_execution_history(
        &self,
        request: Request<GetWorkflowExecutionHistoryRequest>,
    ) -> Reply<GetWorkflowExecutionHistoryResponse> {
        let hop = Hop::of(&request);
        let client_deadline = grpc_timeout(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::run(&ns.id, workflow_id_of(req.execution.as_ref())),
                "GetWorkflowExecutionHistory",
            )
            .await
        {
            return reply;
        }
        let key = self.run_key(&ns, req.execution.as_ref()).await?;
        let close_only = req.history_event_filter_type == HistoryEventFilterType::CloseEvent as i32;
        // A long poll answers (with a token to poll again) a second before the caller's
        // deadline, as the reference does, rather than being cut off by it.
        let wait = req
            .wait_new_event
            .then(|| client_deadline.map_or(Duration::MAX, |t| t.saturating_sub(LONG_POLL_TAIL)));
        let page = self
            .engine
            .history_page(
                &key,
                req.maximum_page_size,
                &req.next_page_token,
                wait,
                close_only,
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(GetWorkflowExecutionHistoryResponse {
            history: Some(History {
                events: page.events,
            }),
            next_page_token: page.next_page_token,
            archived: false,
            ..Default::default()
        }))
    }

    async fn get_workflow_execution_history_reverse(
        &self,
        request: Request<GetWorkflowExecutionHistoryReverseRequest>,
    ) -> Reply<GetWorkflowExecutionHistoryReverseResponse> {
        let hop = Hop::of(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::run(&ns.id, workflow_id_of(req.execution.as_ref())),
                "GetWorkflowExecutionHistoryReverse",
            )
            .await
        {
            return reply;
        }
        let key = self.run_key(&ns, req.execution.as_ref()).await?;
        let page = self
            .engine
            .history_page_reverse(&key, req.maximum_page_size, &req.next_page_token)
            .await
            .map_err(to_status)?;
        Ok(Response::new(GetWorkflowExecutionHistoryReverseResponse {
            history: Some(History {
                events: page.events,
            }),
            next_page_token: page.next_page_token,
        }))
    }

    async fn describe_workflow_execution(
        &self,
        request: Request<DescribeWorkflowExecutionRequest>,
    ) -> Reply<DescribeWorkflowExecutionResponse> {
        let hop = Hop::of(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::run(&ns.id, workflow_id_of(req.execution.as_ref())),
                "DescribeWorkflowExecution",
            )
            .await
        {
            return reply;
        }
        let key = self.run_key(&ns, req.execution.as_ref()).await?;
        let response = self.engine.describe(&ns, &key).await.map_err(to_status)?;
        Ok(Response::new(response))
    }

    async fn request_cancel_workflow_execution(
        &self,
        request: Request<RequestCancelWorkflowExecutionRequest>,
    ) -> Reply<RequestCancelWorkflowExecutionResponse> {
        let hop = Hop::of(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::run(&ns.id, workflow_id_of(req.workflow_execution.as_ref())),
                "RequestCancelWorkflowExecution",
            )
            .await
        {
            return reply;
        }
        let key = self.run_key(&ns, req.workflow_execution.as_ref()).await?;
        self.engine
            .request_cancel(&key, &req.reason, &req.identity, &req.request_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(RequestCancelWorkflowExecutionResponse {}))
    }

    async fn query_workflow(
        &self,
        request: Request<QueryWorkflowRequest>,
    ) -> Reply<QueryWorkflowResponse> {
        let hop = Hop::of(&request);
        let timeout = grpc_timeout(&request).unwrap_or(Duration::from_secs(60));
        let deadline = kairos_core::time::deadline_after(timeout);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::run(&ns.id, workflow_id_of(req.execution.as_ref())),
                "QueryWorkflow",
            )
            .await
        {
            return reply;
        }
        let key = self.run_key(&ns, req.execution.as_ref()).await?;
        let query = req
            .query
            .ok_or_else(|| invalid("Query is not set on request."))?;
        validate::required_id(&self.options.limits, "QueryType", &query.query_type)?;
        validate::payloads(&self.options.limits, "QueryArgs", query.query_args.as_ref())?;
        let state = self.engine.read_state(&key).await.map_err(to_status)?;
        let closed = state.status != WorkflowExecutionStatus::Running as i32;
        let reject = match QueryRejectCondition::try_from(req.query_reject_condition) {
            Ok(QueryRejectCondition::NotOpen) => closed,
            Ok(QueryRejectCondition::NotCompletedCleanly) => {
                closed && state.status != WorkflowExecutionStatus::Completed as i32
            }
            _ => false,
        };
        if reject {
            return Ok(Response::new(QueryWorkflowResponse {
                query_rejected: Some(QueryRejected {
                    status: state.status,
                }),
                ..Default::default()
            }));
        }
        // Never completed a workflow task before closing, or its workflow task keeps failing
        // (third attempt on): no worker can answer, so fail fast as the reference does.
        if (closed && state.last_completed_wft_started_id == 0)
            || (!closed && state.wft_attempt >= 3)
        {
            return Err(workflow_not_ready());
        }
        // Delivery (brief B.4): a workflow task that is scheduled or starts while the query
        // waits carries it (answered in its completion); with no workflow task pending, a
        // query task of its own goes to the worker, on its sticky queue while that is polled.
        let query_id = request_id();
        let (tx, mut rx) = oneshot::channel();
        self.queries.lock().insert(
            query_id.clone(),
            PendingQuery {
                key: key.clone(),
                query,
                answer: Some(tx),
                attached_to: 0,
                dispatched: false,
            },
        );
        let answer = self
            .deliver_query(&ns, &key, &query_id, &mut rx, deadline)
            .await;
        self.queries.lock().remove(&query_id);
        let answer = answer?;
        match QueryResultType::try_from(answer.completed_type) {
            Ok(QueryResultType::Answered) => Ok(Response::new(QueryWorkflowResponse {
                query_result: answer.query_result,
                ..Default::default()
            })),
            _ => Err(query_failed(answer.error_message, answer.failure)),
        }
    }

    async fn respond_query_task_completed(
        &self,
        request: Request<RespondQueryTaskCompletedRequest>,
    ) -> Reply<RespondQueryTaskCompletedResponse> {
        let hop = Hop::of(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::Token(&req.task_token),
                "RespondQueryTaskCompleted",
            )
            .await
        {
            return reply;
        }
        let query_id = self
            .engine
            .query_token(&ns, &req.task_token)
            .map_err(to_status)?;
        validate::payloads(
            &self.options.limits,
            "QueryResult",
            req.query_result.as_ref(),
        )?;
        let sender = self
            .queries
            .lock()
            .get_mut(&query_id)
            .and_then(|q| q.answer.take());
        let Some(sender) = sender else {
            return Err(crate::error::not_found(
                "query task not found, or already expired",
            ));
        };
        let _ = sender.send(req);
        Ok(Response::new(RespondQueryTaskCompletedResponse::default()))
    }

    async fn update_workflow_execution(
        &self,
        request: Request<UpdateWorkflowExecutionRequest>,
    ) -> Reply<UpdateWorkflowExecutionResponse> {
        let hop = Hop::of(&request);
        let deadline = update_deadline(&request);
        let req = request.into_inner();
        if req.wait_policy.as_ref().map(|p| p.lifecycle_stage)
            == Some(UpdateWorkflowExecutionLifecycleStage::Admitted as i32)
        {
            // As the reference: a caller cannot wait for admission alone.
            return Err(crate::error::permission_denied(
                "UpdateWorkflowExecution issued asynchronously and waiting on update admitted is \
                 not supported.",
            ));
        }
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::run(&ns.id, workflow_id_of(req.workflow_execution.as_ref())),
                "UpdateWorkflowExecution",
            )
            .await
        {
            return reply;
        }
        let key = self.run_key(&ns, req.workflow_execution.as_ref()).await?;
        if !req.first_execution_run_id.is_empty() {
            // A run of another chain than the caller names is, to the caller, not there.
            let ms = self.engine.read_state(&key).await.map_err(to_status)?;
            if ms.first_execution_run_id != req.first_execution_run_id {
                return Err(crate::error::not_found("workflow execution not found"));
            }
        }
        let update = req
            .request
            .ok_or_else(|| invalid("Update request is not set on request."))?;
        let response = self
            .run_update(&key, update, req.wait_policy.as_ref(), deadline)
            .await?;
        Ok(Response::new(response))
    }

    async fn execute_multi_operation(
        &self,
        request: Request<ExecuteMultiOperationRequest>,
    ) -> Reply<ExecuteMultiOperationResponse> {
        let hop = Hop::of(&request);
        use execute_multi_operation_request::operation::Operation as Op;
        use execute_multi_operation_response::response::Response as Out;
        let deadline = update_deadline(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::run(
                    &ns.id,
                    req.operations
                        .first()
                        .and_then(|o| match &o.operation {
                            Some(Op::StartWorkflow(s)) => Some(s.workflow_id.as_str()),
                            _ => None,
                        })
                        .unwrap_or(""),
                ),
                "ExecuteMultiOperation",
            )
            .await
        {
            return reply;
        }
        let mut ops = req.operations.into_iter().map(|o| o.operation);
        let (
            Some(Some(Op::StartWorkflow(mut start))),
            Some(Some(Op::UpdateWorkflow(update))),
            None,
        ) = (ops.next(), ops.next(), ops.next())
        else {
            return Err(invalid(
                "Operations have to be exactly [Start, Update] (update-with-start).",
            ));
        };
        let (target_id, target_run) = update
            .workflow_execution
            .as_ref()
            .map(|e| (e.workflow_id.clone(), e.run_id.clone()))
            .unwrap_or_default();
        if target_id != start.workflow_id || !target_run.is_empty() {
            return Err(invalid(
                "The update must name the started workflow's id and no run id.",
            ));
        }
        // Each operation's own error is reported in its slot of a MultiOperationExecutionFailure.
        let start_failed = |e: Status| multi_operation_failed(0, 2, e);
        let update_failed = |e: Status| multi_operation_failed(1, 2, e);
        self.validate_start(&mut start).map_err(start_failed)?;
        self.check_search_attributes(&ns, start.search_attributes.as_ref())
            .map_err(start_failed)?;
        let request = update
            .request
            .ok_or_else(|| update_failed(invalid("Update request is not set on request.")))?;
        // Checked before anything starts: a bad update must not leave a started workflow.
        self.validate_update(&request).map_err(update_failed)?;
        // A new run admits the update in its start transaction; for a running workflow
        // (USE_EXISTING) the update is admitted below (deduplicated by update id either way).
        let started = self
            .engine
            .start_with_update(&ns, &start, request.clone())
            .await
            .map_err(|e| start_failed(to_status(e)))?;
        let key = RunKey {
            namespace_id: ns.id.clone(),
            workflow_id: start.workflow_id.clone(),
            run_id: started.run_id.clone(),
        };
        let updated = self
            .run_update(&key, request, update.wait_policy.as_ref(), deadline)
            .await
            .map_err(update_failed)?;
        let responses = vec![
            Out::StartWorkflow(StartWorkflowExecutionResponse {
                link: Some(links::started(
                    &ns.name,
                    &start.workflow_id,
                    &started.run_id,
                )),
                run_id: started.run_id,
                started: started.started,
                status: WorkflowExecutionStatus::Running as i32,
                ..Default::default()
            }),
            Out::UpdateWorkflow(updated),
        ];
        Ok(Response::new(ExecuteMultiOperationResponse {
            responses: responses
                .into_iter()
                .map(|r| execute_multi_operation_response::Response { response: Some(r) })
                .collect(),
        }))
    }

    async fn poll_workflow_execution_update(
        &self,
        request: Request<PollWorkflowExecutionUpdateRequest>,
    ) -> Reply<PollWorkflowExecutionUpdateResponse> {
        let hop = Hop::of(&request);
        let deadline = update_deadline(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::run(
                    &ns.id,
                    workflow_id_of(
                        req.update_ref
                            .as_ref()
                            .and_then(|r| r.workflow_execution.as_ref()),
                    ),
                ),
                "PollWorkflowExecutionUpdate",
            )
            .await
        {
            return reply;
        }
        let reference = req
            .update_ref
            .ok_or_else(|| invalid("Update reference is not set on request."))?;
        validate::required_id(&self.options.limits, "UpdateId", &reference.update_id)?;
        let key = self
            .run_key(&ns, reference.workflow_execution.as_ref())
            .await?;
        let wanted = poll_stage(req.wait_policy.as_ref());
        let info = self
            .engine
            .wait_update(&key, &reference.update_id, wanted, deadline)
            .await
            .map_err(to_status)?;
        Ok(Response::new(PollWorkflowExecutionUpdateResponse {
            update_ref: Some(update_ref(&key, &reference.update_id)),
            outcome: info.outcome,
            stage: info.stage,
        }))
    }

    async fn signal_workflow_execution(
        &self,
        request: Request<SignalWorkflowExecutionRequest>,
    ) -> Reply<SignalWorkflowExecutionResponse> {
        let hop = Hop::of(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::run(&ns.id, workflow_id_of(req.workflow_execution.as_ref())),
                "SignalWorkflowExecution",
            )
            .await
        {
            return reply;
        }
        let (workflow_id, run_id) = self.execution(req.workflow_execution.as_ref())?;
        let limits = &self.options.limits;
        validate::required_id(limits, "SignalName", &req.signal_name)?;
        validate::optional_id(limits, "RequestId", &req.request_id)?;
        validate::payloads(limits, "Input", req.input.as_ref())?;
        let signal = Signal {
            name: req.signal_name,
            input: req.input,
            identity: req.identity,
            header: req.header,
            request_id: req.request_id.clone(),
            external: None,
        };
        let run_id = self
            .engine
            .signal(&ns, &workflow_id, &run_id, signal)
            .await
            .map_err(to_status)?;
        Ok(Response::new(SignalWorkflowExecutionResponse {
            link: Some(links::signaled(
                &ns.name,
                &workflow_id,
                &run_id,
                &req.request_id,
            )),
        }))
    }

    async fn signal_with_start_workflow_execution(
        &self,
        request: Request<SignalWithStartWorkflowExecutionRequest>,
    ) -> Reply<SignalWithStartWorkflowExecutionResponse> {
        let hop = Hop::of(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::run(&ns.id, &req.workflow_id),
                "SignalWithStartWorkflowExecution",
            )
            .await
        {
            return reply;
        }
        let limits = &self.options.limits;
        validate::required_id(limits, "SignalName", &req.signal_name)?;
        validate::payloads(limits, "SignalInput", req.signal_input.as_ref())?;
        if req.workflow_id_conflict_policy
            == temporalio_protos::temporal::api::enums::v1::WorkflowIdConflictPolicy::Fail as i32
        {
            return Err(invalid(
                "SignalWithStartWorkflowExecution doesn't support WORKFLOW_ID_CONFLICT_POLICY_FAIL",
            ));
        }
        let mut start = StartWorkflowExecutionRequest {
            namespace: req.namespace,
            workflow_id: req.workflow_id,
            workflow_type: req.workflow_type,
            task_queue: req.task_queue,
            input: req.input,
            workflow_execution_timeout: req.workflow_execution_timeout,
            workflow_run_timeout: req.workflow_run_timeout,
            workflow_task_timeout: req.workflow_task_timeout,
            identity: req.identity.clone(),
            request_id: req.request_id,
            workflow_id_reuse_policy: req.workflow_id_reuse_policy,
            workflow_id_conflict_policy: req.workflow_id_conflict_policy,
            retry_policy: req.retry_policy,
            cron_schedule: req.cron_schedule,
            memo: req.memo,
            search_attributes: req.search_attributes,
            header: req.header.clone(),
            workflow_start_delay: req.workflow_start_delay,
            user_metadata: req.user_metadata,
            links: req.links,
            versioning_override: req.versioning_override,
            priority: req.priority,
            ..Default::default()
        };
        self.validate_start(&mut start)?;
        self.check_search_attributes(&ns, start.search_attributes.as_ref())?;
        let signal = Signal {
            name: req.signal_name,
            input: req.signal_input,
            identity: req.identity,
            header: req.header,
            // The start's request id: a retried call neither starts nor signals twice.
            request_id: start.request_id.clone(),
            external: None,
        };
        let outcome = self
            .engine
            .signal_with_start(&ns, &start, signal)
            .await
            .map_err(to_status)?;
        Ok(Response::new(SignalWithStartWorkflowExecutionResponse {
            signal_link: Some(links::signaled(
                &ns.name,
                &start.workflow_id,
                &outcome.run_id,
                &start.request_id,
            )),
            run_id: outcome.run_id,
            started: outcome.started,
            ..Default::default()
        }))
    }

    async fn terminate_workflow_execution(
        &self,
        request: Request<TerminateWorkflowExecutionRequest>,
    ) -> Reply<TerminateWorkflowExecutionResponse> {
        let hop = Hop::of(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::run(&ns.id, workflow_id_of(req.workflow_execution.as_ref())),
                "TerminateWorkflowExecution",
            )
            .await
        {
            return reply;
        }
        validate::payloads(&self.options.limits, "Details", req.details.as_ref())?;
        let key = self.run_key(&ns, req.workflow_execution.as_ref()).await?;
        self.engine
            .terminate(
                &key,
                terminate_reason(&req.reason),
                req.details.clone(),
                &req.identity,
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(TerminateWorkflowExecutionResponse {}))
    }

    async fn list_workflow_executions(
        &self,
        request: Request<ListWorkflowExecutionsRequest>,
    ) -> Reply<ListWorkflowExecutionsResponse> {
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        let (executions, next_page_token) = self
            .engine
            .list_workflows(&ns, &req.query, req.page_size, &req.next_page_token)
            .await
            .map_err(to_status)?;
        Ok(Response::new(ListWorkflowExecutionsResponse {
            executions,
            next_page_token,
        }))
    }

    /// Scan is a list with no ordering promise: the same answer serves.
    async fn scan_workflow_executions(
        &self,
        request: Request<ScanWorkflowExecutionsRequest>,
    ) -> Reply<ScanWorkflowExecutionsResponse> {
        let req = request.into_inner();
        let list = self
            .list_workflow_executions(Request::new(ListWorkflowExecutionsRequest {
                namespace: req.namespace,
                page_size: req.page_size,
                next_page_token: req.next_page_token,
                query: req.query,
            }))
            .await?
            .into_inner();
        Ok(Response::new(ScanWorkflowExecutionsResponse {
            executions: list.executions,
            next_page_token: list.next_page_token,
        }))
    }

    async fn count_workflow_executions(
        &self,
        request: Request<CountWorkflowExecutionsRequest>,
    ) -> Reply<CountWorkflowExecutionsResponse> {
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        let (count, groups) = self
            .engine
            .count_workflows(&ns, &req.query)
            .await
            .map_err(to_status)?;
        let groups = groups
            .unwrap_or_default()
            .into_iter()
            .map(|(status, count)| {
                let name = WorkflowExecutionStatus::try_from(status)
                    .map(status_name)
                    .unwrap_or("Unspecified");
                count_workflow_executions_response::AggregationGroup {
                    group_values: vec![keyword_payload(name)],
                    count,
                }
            })
            .collect();
        Ok(Response::new(CountWorkflowExecutionsResponse {
            count,
            groups,
        }))
    }

    async fn list_open_workflow_executions(
        &self,
        request: Request<ListOpenWorkflowExecutionsRequest>,
    ) -> Reply<ListOpenWorkflowExecutionsResponse> {
        use list_open_workflow_executions_request::Filters;
        let req = request.into_inner();
        let filter = match &req.filters {
            Some(Filters::ExecutionFilter(f)) => {
                Some(format!("WorkflowId = {}", quote(&f.workflow_id)))
            }
            Some(Filters::TypeFilter(f)) => Some(format!("WorkflowType = {}", quote(&f.name))),
            None => None,
        };
        let (executions, next_page_token) = self
            .legacy_list(
                &req.namespace,
                "ExecutionStatus = 'Running'",
                filter,
                req.start_time_filter.as_ref(),
                req.maximum_page_size,
                &req.next_page_token,
            )
            .await?;
        Ok(Response::new(ListOpenWorkflowExecutionsResponse {
            executions,
            next_page_token,
        }))
    }

    async fn list_closed_workflow_executions(
        &self,
        request: Request<ListClosedWorkflowExecutionsRequest>,
    ) -> Reply<ListClosedWorkflowExecutionsResponse> {
        use list_closed_workflow_executions_request::Filters;
        let req = request.into_inner();
        let filter = match &req.filters {
            Some(Filters::ExecutionFilter(f)) => {
                Some(format!("WorkflowId = {}", quote(&f.workflow_id)))
            }
            Some(Filters::TypeFilter(f)) => Some(format!("WorkflowType = {}", quote(&f.name))),
            Some(Filters::StatusFilter(f)) => Some(format!("ExecutionStatus = {}", f.status)),
            None => None,
        };
        let (executions, next_page_token) = self
            .legacy_list(
                &req.namespace,
                "ExecutionStatus != 'Running'",
                filter,
                req.start_time_filter.as_ref(),
                req.maximum_page_size,
                &req.next_page_token,
            )
            .await?;
        Ok(Response::new(ListClosedWorkflowExecutionsResponse {
            executions,
            next_page_token,
        }))
    }

    async fn get_search_attributes(
        &self,
        _request: Request<GetSearchAttributesRequest>,
    ) -> Reply<GetSearchAttributesResponse> {
        // Every namespace's custom attributes, with the system and predefined ones.
        let mut keys = system_search_attributes();
        for ns in self.engine.namespaces().list() {
            for (name, ty) in ns.custom_search_attributes.iter() {
                keys.insert(name.clone(), *ty);
            }
        }
        Ok(Response::new(GetSearchAttributesResponse { keys }))
    }

    async fn reset_workflow_execution(
        &self,
        request: Request<ResetWorkflowExecutionRequest>,
    ) -> Reply<ResetWorkflowExecutionResponse> {
        let hop = Hop::of(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::run(&ns.id, workflow_id_of(req.workflow_execution.as_ref())),
                "ResetWorkflowExecution",
            )
            .await
        {
            return reply;
        }
        let (workflow_id, _) = self.execution(req.workflow_execution.as_ref())?;
        validate::required_id(&self.options.limits, "WorkflowId", &workflow_id)?;
        validate::optional_id(&self.options.limits, "RequestId", &req.request_id)?;
        if req.workflow_task_finish_event_id <= 0 {
            return Err(invalid("WorkflowTaskFinishEventId must be set."));
        }
        let run_id = self.engine.reset(&ns, &req).await.map_err(to_status)?;
        Ok(Response::new(ResetWorkflowExecutionResponse { run_id }))
    }

    async fn delete_workflow_execution(
        &self,
        request: Request<DeleteWorkflowExecutionRequest>,
    ) -> Reply<DeleteWorkflowExecutionResponse> {
        let hop = Hop::of(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::run(&ns.id, workflow_id_of(req.workflow_execution.as_ref())),
                "DeleteWorkflowExecution",
            )
            .await
        {
            return reply;
        }
        let key = self.run_key(&ns, req.workflow_execution.as_ref()).await?;
        let state = self.engine.read_state(&key).await.map_err(to_status)?;
        if state.status == WorkflowExecutionStatus::Running as i32 {
            self.engine
                .terminate(&key, "Delete workflow execution", None, "kairos")
                .await
                .map_err(to_status)?;
        }
        self.engine.delete(&key, None).await.map_err(to_status)?;
        Ok(Response::new(DeleteWorkflowExecutionResponse {}))
    }

    async fn reset_sticky_task_queue(
        &self,
        request: Request<ResetStickyTaskQueueRequest>,
    ) -> Reply<ResetStickyTaskQueueResponse> {
        let hop = Hop::of(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::run(&ns.id, workflow_id_of(req.execution.as_ref())),
                "ResetStickyTaskQueue",
            )
            .await
        {
            return reply;
        }
        let key = self.run_key(&ns, req.execution.as_ref()).await?;
        self.engine.reset_sticky(&key).await.map_err(to_status)?;
        Ok(Response::new(ResetStickyTaskQueueResponse {}))
    }

    async fn shutdown_worker(
        &self,
        request: Request<ShutdownWorkerRequest>,
    ) -> Reply<ShutdownWorkerResponse> {
        let hop = Hop::of(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        if let Some(reply) = self
            .elsewhere(
                &hop,
                &req,
                Route::queue(&ns.id, &req.sticky_task_queue),
                "ShutdownWorker",
            )
            .await
        {
            return reply;
        }
        if !req.sticky_task_queue.is_empty() {
            let stranded =
                self.matching
                    .close_queue(&ns.id, &req.sticky_task_queue, TaskKind::Workflow);
            self.engine.sticky_worker_gone(stranded).await;
        }
        // Its last heartbeat (status SHUTDOWN removes it from the list).
        if let Some(heartbeat) = req.worker_heartbeat {
            self.workers.record(&ns.id, heartbeat);
        }
        Ok(Response::new(ShutdownWorkerResponse::default()))
    }

    async fn record_worker_heartbeat(
        &self,
        request: Request<RecordWorkerHeartbeatRequest>,
    ) -> Reply<RecordWorkerHeartbeatResponse> {
        let hop = Hop::of(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        let route = Route::Workers {
            namespace_id: &ns.id,
        };
        if let Some(reply) = self
            .elsewhere(&hop, &req, route, "RecordWorkerHeartbeat")
            .await
        {
            return reply;
        }
        crate::workers::rpc::record(&self.workers, &ns.id, req);
        Ok(Response::new(RecordWorkerHeartbeatResponse::default()))
    }

    async fn list_workers(
        &self,
        request: Request<ListWorkersRequest>,
    ) -> Reply<ListWorkersResponse> {
        let hop = Hop::of(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        let route = Route::Workers {
            namespace_id: &ns.id,
        };
        if let Some(reply) = self.elsewhere(&hop, &req, route, "ListWorkers").await {
            return reply;
        }
        crate::workers::rpc::list(&self.workers, &ns.id, &req).map(Response::new)
    }

    async fn count_workers(
        &self,
        request: Request<CountWorkersRequest>,
    ) -> Reply<CountWorkersResponse> {
        let hop = Hop::of(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        let route = Route::Workers {
            namespace_id: &ns.id,
        };
        if let Some(reply) = self.elsewhere(&hop, &req, route, "CountWorkers").await {
            return reply;
        }
        crate::workers::rpc::count(&self.workers, &ns.id, &req).map(Response::new)
    }

    async fn describe_worker(
        &self,
        request: Request<DescribeWorkerRequest>,
    ) -> Reply<DescribeWorkerResponse> {
        let hop = Hop::of(&request);
        let req = request.into_inner();
        let ns = self.namespace(&req.namespace)?;
        let route = Route::Workers {
            namespace_id: &ns.id,
        };
        if let Some(reply) = self.elsewhere(&hop, &req, route, "DescribeWorker").await {
            return reply;
        }
        crate::workers::rpc::describe(&self.workers, &ns.id, &req).map(Response::new)
    }
}

fn response_task_queue(name: String) -> String {
    name
}

/// A status as the count groups name it ("Running", "TimedOut", ...).
fn status_name(status: WorkflowExecutionStatus) -> &'static str {
    match status {
        WorkflowExecutionStatus::Running => "Running",
        WorkflowExecutionStatus::Completed => "Completed",
        WorkflowExecutionStatus::Failed => "Failed",
        WorkflowExecutionStatus::Canceled => "Canceled",
        WorkflowExecutionStatus::Terminated => "Terminated",
        WorkflowExecutionStatus::ContinuedAsNew => "ContinuedAsNew",
        WorkflowExecutionStatus::TimedOut => "TimedOut",
        _ => "Unspecified",
    }
}

/// A Keyword search-attribute value as a payload (JSON, with its type).
fn keyword_payload(value: &str) -> temporalio_protos::temporal::api::common::v1::Payload {
    temporalio_protos::temporal::api::common::v1::Payload {
        metadata: [
            ("encoding".to_string(), b"json/plain".to_vec()),
            ("type".to_string(), b"Keyword".to_vec()),
        ]
        .into_iter()
        .collect(),
        data: format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\"")).into_bytes(),
        ..Default::default()
    }
}

/// A string literal of the query language (backslashes escaped, single quotes doubled).
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// `StartTime` bounds of a legacy list filter.
fn start_time_terms(
    filter: Option<&temporalio_protos::temporal::api::filter::v1::StartTimeFilter>,
) -> Vec<String> {
    let Some(f) = filter else {
        return Vec::new();
    };
    let ns = |t: &prost_wkt_types::Timestamp| {
        t.seconds
            .saturating_mul(1_000_000_000)
            .saturating_add(t.nanos as i64)
    };
    let mut terms = Vec::new();
    if let Some(t) = f.earliest_time.as_ref().filter(|t| ns(t) > 0) {
        terms.push(format!("StartTime >= {}", ns(t)));
    }
    if let Some(t) = f.latest_time.as_ref().filter(|t| ns(t) > 0) {
        terms.push(format!("StartTime <= {}", ns(t)));
    }
    terms
}

/// The system and predefined search attributes with their `IndexedValueType`.
pub(crate) fn system_search_attributes() -> HashMap<String, i32> {
    let mut keys: HashMap<String, i32> = kairos_visibility::attrs::SYSTEM
        .iter()
        .map(|a| (a.name.to_string(), a.ty.indexed_value_type()))
        .collect();
    for (name, ty) in kairos_visibility::attrs::PREDEFINED {
        keys.insert(name.to_string(), ty.indexed_value_type());
    }
    keys
}

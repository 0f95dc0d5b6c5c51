//! `kairos worker ...`: the workers that heartbeat to the server (`temporal worker list`,
//! `describe` and `count`, with their flags and shapes).
use super::*;
use temporalio_protos::temporal::api::enums::v1::WorkerStatus;
use temporalio_protos::temporal::api::worker::v1::{WorkerHeartbeat, WorkerSlotsInfo};

#[derive(Subcommand)]
pub enum WorkerCommand {
    /// List the workers that heartbeat.
    List {
        /// List filter over the heartbeat's fields (TaskQueue, WorkerStatus, HostName, ...).
        #[arg(short = 'q', long, default_value = "")]
        query: String,
        /// Show at most this many.
        #[arg(long, default_value_t = 0)]
        limit: usize,
        /// Also the workers of the server's own task queues.
        #[arg(long)]
        include_system_workers: bool,
    },
    /// Show one worker's last heartbeat.
    Describe {
        #[arg(long)]
        worker_instance_key: String,
    },
    /// Count the workers that heartbeat.
    Count {
        #[arg(short = 'q', long, default_value = "")]
        query: String,
        #[arg(long)]
        include_system_workers: bool,
    },
}

impl Client {
    pub async fn worker(&mut self, command: WorkerCommand) -> anyhow::Result<()> {
        match command {
            WorkerCommand::List {
                query,
                limit,
                include_system_workers,
            } => {
                let answer = self
                    .wf
                    .list_workers(ws::ListWorkersRequest {
                        namespace: self.namespace.clone(),
                        query,
                        include_system_workers,
                        ..Default::default()
                    })
                    .await
                    .map_err(rpc("unable to list workers"))?
                    .into_inner();
                #[allow(deprecated)]
                let mut workers: Vec<WorkerHeartbeat> = answer
                    .workers_info
                    .into_iter()
                    .filter_map(|w| w.worker_heartbeat)
                    .collect();
                if limit > 0 {
                    workers.truncate(limit);
                }
                if self.output == Output::Json {
                    print_json(&Value::Array(workers.iter().map(worker_json).collect()));
                    return Ok(());
                }
                let rows: Vec<Vec<String>> = workers
                    .iter()
                    .map(|w| {
                        vec![
                            w.worker_instance_key.clone(),
                            status_text(w.status),
                            w.task_queue.clone(),
                            w.worker_identity.clone(),
                            w.host_info
                                .as_ref()
                                .map(|h| h.host_name.clone())
                                .unwrap_or_default(),
                            deployment(w),
                            time_text(w.heartbeat_time.as_ref()),
                            elapsed(w),
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "WorkerInstanceKey",
                        "Status",
                        "TaskQueue",
                        "WorkerIdentity",
                        "HostName",
                        "Deployment",
                        "HeartbeatTime",
                        "Elapsed",
                    ],
                    &rows,
                );
            }
            WorkerCommand::Describe {
                worker_instance_key,
            } => {
                let w = self
                    .wf
                    .describe_worker(ws::DescribeWorkerRequest {
                        namespace: self.namespace.clone(),
                        worker_instance_key,
                    })
                    .await
                    .map_err(rpc("unable to describe worker"))?
                    .into_inner()
                    .worker_info
                    .and_then(|i| i.worker_heartbeat)
                    .unwrap_or_default();
                if self.output == Output::Json {
                    print_json(&worker_json(&w));
                    return Ok(());
                }
                let slots = |s: Option<&WorkerSlotsInfo>| {
                    s.map(|s| {
                        format!(
                            "{} used, {} available",
                            s.current_used_slots, s.current_available_slots
                        )
                    })
                    .unwrap_or_default()
                };
                let host = w.host_info.clone().unwrap_or_default();
                print_record(
                    None,
                    &[
                        ("WorkerInstanceKey", w.worker_instance_key.clone()),
                        ("Status", status_text(w.status)),
                        ("TaskQueue", w.task_queue.clone()),
                        ("WorkerIdentity", w.worker_identity.clone()),
                        ("HostName", host.host_name),
                        ("ProcessId", host.process_id),
                        ("Deployment", deployment(&w)),
                        ("Sdk", format!("{} {}", w.sdk_name, w.sdk_version)),
                        ("StartTime", time_text(w.start_time.as_ref())),
                        ("HeartbeatTime", time_text(w.heartbeat_time.as_ref())),
                        ("Elapsed", elapsed(&w)),
                        (
                            "WorkflowTaskSlots",
                            slots(w.workflow_task_slots_info.as_ref()),
                        ),
                        (
                            "ActivityTaskSlots",
                            slots(w.activity_task_slots_info.as_ref()),
                        ),
                        (
                            "LocalActivitySlots",
                            slots(w.local_activity_slots_info.as_ref()),
                        ),
                        ("StickyCacheSize", w.current_sticky_cache_size.to_string()),
                        (
                            "StickyCacheHitsMisses",
                            format!(
                                "{} / {}",
                                w.total_sticky_cache_hit, w.total_sticky_cache_miss
                            ),
                        ),
                    ],
                );
            }
            WorkerCommand::Count {
                query,
                include_system_workers,
            } => {
                let count = self
                    .wf
                    .count_workers(ws::CountWorkersRequest {
                        namespace: self.namespace.clone(),
                        query,
                        include_system_workers,
                    })
                    .await
                    .map_err(rpc("unable to count workers"))?
                    .into_inner()
                    .count;
                if self.output == Output::Json {
                    print_json(&json!({ "count": count.to_string() }));
                } else {
                    println!("Total: {count}");
                }
            }
        }
        Ok(())
    }
}

fn status_text(status: i32) -> String {
    let status = WorkerStatus::try_from(status).unwrap_or(WorkerStatus::Unspecified);
    kairos_core::names::pascal_case(status.as_str_name(), "WORKER_STATUS_")
}

/// `name@buildId`, as the temporal CLI shows a worker's deployment version.
fn deployment(w: &WorkerHeartbeat) -> String {
    w.deployment_version
        .as_ref()
        .map(|v| format!("{}@{}", v.deployment_name, v.build_id))
        .unwrap_or_default()
}

fn elapsed(w: &WorkerHeartbeat) -> String {
    w.elapsed_since_last_heartbeat
        .as_ref()
        .map(|d| format!("{:.1}s", d.seconds as f64 + f64::from(d.nanos) / 1e9))
        .unwrap_or_default()
}

fn slots_json(s: Option<&WorkerSlotsInfo>) -> Value {
    s.map(|s| {
        json!({
            "currentAvailableSlots": s.current_available_slots,
            "currentUsedSlots": s.current_used_slots,
            "slotSupplierKind": s.slot_supplier_kind,
            "totalProcessedTasks": s.total_processed_tasks,
            "totalFailedTasks": s.total_failed_tasks,
        })
    })
    .unwrap_or(Value::Null)
}

/// A worker as `{"workerHeartbeat": {...}}` with protojson field names.
fn worker_json(w: &WorkerHeartbeat) -> Value {
    let host = w.host_info.clone().unwrap_or_default();
    let mut hb = json!({
        "workerInstanceKey": w.worker_instance_key,
        "workerIdentity": w.worker_identity,
        "hostInfo": {
            "hostName": host.host_name,
            "workerGroupingKey": host.worker_grouping_key,
            "processId": host.process_id,
        },
        "taskQueue": w.task_queue,
        "deploymentVersion": w.deployment_version.as_ref().map(|v| json!({
            "deploymentName": v.deployment_name,
            "buildId": v.build_id,
        })),
        "sdkName": w.sdk_name,
        "sdkVersion": w.sdk_version,
        "status": WorkerStatus::try_from(w.status)
            .unwrap_or(WorkerStatus::Unspecified)
            .as_str_name(),
        "startTime": time_json(w.start_time.as_ref()),
        "heartbeatTime": time_json(w.heartbeat_time.as_ref()),
        "workflowTaskSlotsInfo": slots_json(w.workflow_task_slots_info.as_ref()),
        "activityTaskSlotsInfo": slots_json(w.activity_task_slots_info.as_ref()),
        "localActivitySlotsInfo": slots_json(w.local_activity_slots_info.as_ref()),
        "totalStickyCacheHit": w.total_sticky_cache_hit,
        "totalStickyCacheMiss": w.total_sticky_cache_miss,
        "currentStickyCacheSize": w.current_sticky_cache_size,
    });
    if let Some(obj) = hb.as_object_mut() {
        obj.retain(|_, v| !v.is_null());
    }
    json!({ "workerHeartbeat": hb })
}

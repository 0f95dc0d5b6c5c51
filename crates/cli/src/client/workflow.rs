//! `kairos workflow ...`: start, list, count, describe, show, result, signal, query, update,
//! cancel, terminate, delete, reset, and the event formatting they share.
use super::*;

#[derive(Subcommand)]
pub enum WorkflowCommand {
    /// Start a workflow and print its ids.
    Start(StartArgs),
    /// Start a workflow and wait for its result.
    Execute(StartArgs),
    /// List workflows matching a query.
    List {
        /// Filter (the visibility query language).
        #[arg(short = 'q', long, default_value = "")]
        query: String,
        /// At most this many (0: all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
    },
    /// Count workflows matching a query (`GROUP BY ExecutionStatus` allowed).
    Count {
        #[arg(short = 'q', long, default_value = "")]
        query: String,
    },
    /// Show a workflow's state.
    Describe(Target),
    /// Show a workflow's event history.
    Show {
        #[command(flatten)]
        target: Target,
        /// Keep printing new events until the workflow closes.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Wait for a workflow's result.
    Result(Target),
    /// Send a signal.
    Signal {
        #[command(flatten)]
        target: Target,
        /// Signal name.
        #[arg(long)]
        name: String,
        /// JSON input (repeatable: one argument each).
        #[arg(short = 'i', long)]
        input: Vec<String>,
    },
    /// Query a workflow.
    Query {
        #[command(flatten)]
        target: Target,
        /// Query type.
        #[arg(long = "type", alias = "name")]
        query_type: String,
        #[arg(short = 'i', long)]
        input: Vec<String>,
    },
    /// Updates.
    Update {
        #[command(subcommand)]
        command: UpdateCommand,
    },
    /// Request cancellation.
    Cancel(Target),
    /// Terminate.
    Terminate {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Delete a workflow run and its history.
    Delete(Target),
    /// Reset a workflow to the end of a workflow task.
    Reset {
        #[command(flatten)]
        target: Target,
        /// A WorkflowTaskCompleted/Failed/TimedOut event id.
        #[arg(short = 'e', long)]
        event_id: Option<i64>,
        /// Or: FirstWorkflowTask or LastWorkflowTask.
        #[arg(short = 't', long = "type")]
        reset_type: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Print the workflow's stack trace (the `__stack_trace` query).
    Stack(Target),
}

#[derive(Subcommand)]
pub enum UpdateCommand {
    /// Send an update and wait for its result.
    Execute {
        #[command(flatten)]
        target: Target,
        /// Update name.
        #[arg(long)]
        name: String,
        #[arg(short = 'i', long)]
        input: Vec<String>,
        /// Update id (default: a new UUID).
        #[arg(long)]
        update_id: Option<String>,
    },
}

/// Which workflow a command is about.
#[derive(Args, Clone)]
pub struct Target {
    /// Workflow id.
    #[arg(short = 'w', long)]
    pub workflow_id: String,
    /// Run id (default: the latest run).
    #[arg(short = 'r', long, default_value = "")]
    pub run_id: String,
}

#[derive(Args, Clone)]
pub struct StartArgs {
    /// Workflow type.
    #[arg(long = "type")]
    pub workflow_type: String,
    #[arg(short = 't', long)]
    pub task_queue: String,
    /// Workflow id (default: a new UUID).
    #[arg(short = 'w', long)]
    pub workflow_id: Option<String>,
    /// JSON input (repeatable: one argument each).
    #[arg(short = 'i', long)]
    pub input: Vec<String>,
    /// e.g. 1h, 30s.
    #[arg(long)]
    pub execution_timeout: Option<String>,
    #[arg(long)]
    pub run_timeout: Option<String>,
    /// Cron schedule.
    #[arg(long)]
    pub cron: Option<String>,
    /// KEY=JSON (repeatable).
    #[arg(long = "search-attribute")]
    pub search_attributes: Vec<String>,
    /// KEY=JSON (repeatable).
    #[arg(long)]
    pub memo: Vec<String>,
}

impl Client {
    fn execution(&self, t: &Target) -> Option<WorkflowExecution> {
        Some(WorkflowExecution {
            workflow_id: t.workflow_id.clone(),
            run_id: t.run_id.clone(),
        })
    }

    pub async fn workflow(&mut self, command: WorkflowCommand) -> anyhow::Result<()> {
        match command {
            WorkflowCommand::Start(args) => {
                let (id, run) = self.start(&args).await?;
                self.print_started(&args, &id, &run);
                Ok(())
            }
            WorkflowCommand::Execute(args) => {
                let (id, run) = self.start(&args).await?;
                if self.output == Output::Text {
                    self.print_started(&args, &id, &run);
                }
                let target = Target {
                    workflow_id: id,
                    run_id: run,
                };
                self.result(&target).await
            }
            WorkflowCommand::List { query, limit } => self.list(&query, limit).await,
            WorkflowCommand::Count { query } => self.count(&query).await,
            WorkflowCommand::Describe(t) => self.describe(&t).await,
            WorkflowCommand::Show { target, follow } => self.show(&target, follow).await,
            WorkflowCommand::Result(t) => self.result(&t).await,
            WorkflowCommand::Signal {
                target,
                name,
                input,
            } => {
                self.wf
                    .signal_workflow_execution(ws::SignalWorkflowExecutionRequest {
                        namespace: self.namespace.clone(),
                        workflow_execution: self.execution(&target),
                        signal_name: name,
                        input: payloads(&input)?,
                        identity: identity(),
                        request_id: uuid::Uuid::new_v4().to_string(),
                        ..Default::default()
                    })
                    .await
                    .map_err(rpc("failed signalling workflow"))?;
                println!("Signal workflow succeeded");
                Ok(())
            }
            WorkflowCommand::Query {
                target,
                query_type,
                input,
            } => self.query(&target, &query_type, payloads(&input)?).await,
            WorkflowCommand::Update {
                command:
                    UpdateCommand::Execute {
                        target,
                        name,
                        input,
                        update_id,
                    },
            } => self.update(&target, &name, &input, update_id).await,
            WorkflowCommand::Cancel(t) => {
                self.wf
                    .request_cancel_workflow_execution(ws::RequestCancelWorkflowExecutionRequest {
                        namespace: self.namespace.clone(),
                        workflow_execution: self.execution(&t),
                        identity: identity(),
                        request_id: uuid::Uuid::new_v4().to_string(),
                        ..Default::default()
                    })
                    .await
                    .map_err(rpc("failed to cancel workflow"))?;
                println!("Canceled workflow");
                Ok(())
            }
            WorkflowCommand::Terminate { target, reason } => {
                self.wf
                    .terminate_workflow_execution(ws::TerminateWorkflowExecutionRequest {
                        namespace: self.namespace.clone(),
                        workflow_execution: self.execution(&target),
                        reason,
                        identity: identity(),
                        ..Default::default()
                    })
                    .await
                    .map_err(rpc("failed to terminate workflow"))?;
                println!("Workflow terminated");
                Ok(())
            }
            WorkflowCommand::Delete(t) => {
                self.wf
                    .delete_workflow_execution(ws::DeleteWorkflowExecutionRequest {
                        namespace: self.namespace.clone(),
                        workflow_execution: self.execution(&t),
                    })
                    .await
                    .map_err(rpc("failed to delete workflow"))?;
                println!("Delete workflow succeeded");
                Ok(())
            }
            WorkflowCommand::Reset {
                target,
                event_id,
                reset_type,
                reason,
            } => self.reset(&target, event_id, reset_type, reason).await,
            WorkflowCommand::Stack(t) => self.query(&t, "__stack_trace", None).await,
        }
    }

    async fn start(&mut self, args: &StartArgs) -> anyhow::Result<(String, String)> {
        let id = args
            .workflow_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let req = ws::StartWorkflowExecutionRequest {
            namespace: self.namespace.clone(),
            workflow_id: id.clone(),
            workflow_type: Some(WorkflowType {
                name: args.workflow_type.clone(),
            }),
            task_queue: Some(TaskQueue {
                name: args.task_queue.clone(),
                ..Default::default()
            }),
            input: payloads(&args.input)?,
            workflow_execution_timeout: args
                .execution_timeout
                .as_deref()
                .map(parse_go_duration)
                .transpose()?,
            workflow_run_timeout: args
                .run_timeout
                .as_deref()
                .map(parse_go_duration)
                .transpose()?,
            identity: identity(),
            request_id: uuid::Uuid::new_v4().to_string(),
            cron_schedule: args.cron.clone().unwrap_or_default(),
            search_attributes: (!args.search_attributes.is_empty())
                .then(|| key_values(&args.search_attributes, "search-attribute"))
                .transpose()?
                .map(|indexed_fields| SearchAttributes { indexed_fields }),
            memo: (!args.memo.is_empty())
                .then(|| key_values(&args.memo, "memo"))
                .transpose()?
                .map(|fields| temporalio_protos::temporal::api::common::v1::Memo { fields }),
            ..Default::default()
        };
        let resp = self
            .wf
            .start_workflow_execution(req)
            .await
            .map_err(rpc("failed starting workflow"))?
            .into_inner();
        Ok((id, resp.run_id))
    }

    fn print_started(&self, args: &StartArgs, id: &str, run: &str) {
        if self.output == Output::Json {
            print_json(
                &json!({"workflowId": id, "runId": run, "type": args.workflow_type,
                "namespace": self.namespace, "taskQueue": args.task_queue}),
            );
            return;
        }
        print_record(
            Some("Running execution:"),
            &[
                ("WorkflowId", id.to_string()),
                ("RunId", run.to_string()),
                ("Type", args.workflow_type.clone()),
                ("Namespace", self.namespace.clone()),
                ("TaskQueue", args.task_queue.clone()),
            ],
        );
    }

    async fn list(&mut self, query: &str, limit: usize) -> anyhow::Result<()> {
        let mut all = Vec::new();
        let mut token = Vec::new();
        loop {
            let resp = self
                .wf
                .list_workflow_executions(ws::ListWorkflowExecutionsRequest {
                    namespace: self.namespace.clone(),
                    page_size: 1000,
                    next_page_token: token,
                    query: query.to_string(),
                })
                .await
                .map_err(rpc("failed listing workflows"))?
                .into_inner();
            all.extend(resp.executions);
            token = resp.next_page_token;
            if token.is_empty() || (limit > 0 && all.len() >= limit) {
                break;
            }
        }
        if limit > 0 {
            all.truncate(limit);
        }
        if self.output == Output::Json {
            print_json(&Value::Array(all.iter().map(info_json).collect()));
            return Ok(());
        }
        let rows: Vec<Vec<String>> = all
            .iter()
            .map(|i| {
                vec![
                    status_text(i.status).to_string(),
                    i.execution
                        .as_ref()
                        .map(|e| e.workflow_id.clone())
                        .unwrap_or_default(),
                    i.r#type
                        .as_ref()
                        .map(|t| t.name.clone())
                        .unwrap_or_default(),
                    time_text(i.start_time.as_ref()),
                ]
            })
            .collect();
        print_table(&["Status", "WorkflowId", "Type", "StartTime"], &rows);
        Ok(())
    }

    async fn count(&mut self, query: &str) -> anyhow::Result<()> {
        let resp = self
            .wf
            .count_workflow_executions(ws::CountWorkflowExecutionsRequest {
                namespace: self.namespace.clone(),
                query: query.to_string(),
            })
            .await
            .map_err(rpc("failed counting workflows"))?
            .into_inner();
        let groups: Vec<(Vec<Value>, i64)> = resp
            .groups
            .iter()
            .map(|g| (g.group_values.iter().map(payload_value).collect(), g.count))
            .collect();
        if self.output == Output::Json {
            let groups: Vec<Value> = groups
                .iter()
                .map(|(v, c)| json!({"groupValues": v, "count": c.to_string()}))
                .collect();
            let mut v = json!({"count": resp.count.to_string()});
            if !groups.is_empty() {
                v["groups"] = Value::Array(groups);
            }
            print_json(&v);
            return Ok(());
        }
        println!("Total: {}", resp.count);
        for (values, count) in groups {
            let values: Vec<String> = values
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect();
            println!("Group total: {count}, values: {}", values.join(", "));
        }
        Ok(())
    }

    async fn describe_raw(
        &mut self,
        t: &Target,
    ) -> anyhow::Result<ws::DescribeWorkflowExecutionResponse> {
        Ok(self
            .wf
            .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
                namespace: self.namespace.clone(),
                execution: self.execution(t),
            })
            .await
            .map_err(rpc("failed describing workflow"))?
            .into_inner())
    }

    async fn describe(&mut self, t: &Target) -> anyhow::Result<()> {
        let resp = self.describe_raw(t).await?;
        let info = resp.workflow_execution_info.clone().unwrap_or_default();
        if self.output == Output::Json {
            let pending: Vec<Value> = resp
                .pending_activities
                .iter()
                .map(|a| {
                    json!({"activityId": a.activity_id,
                        "activityType": {"name": a.activity_type.as_ref().map(|t| t.name.clone())},
                        "attempt": a.attempt})
                })
                .collect();
            let children: Vec<Value> = resp
                .pending_children
                .iter()
                .map(|c| {
                    json!({"workflowId": c.workflow_id, "runId": c.run_id,
                    "workflowTypeName": c.workflow_type_name})
                })
                .collect();
            print_json(&json!({
                "workflowExecutionInfo": info_json(&info),
                "pendingActivities": pending,
                "pendingChildren": children,
            }));
            return Ok(());
        }
        let exec = info.execution.clone().unwrap_or_default();
        let mut rows = vec![
            ("WorkflowId", exec.workflow_id.clone()),
            ("RunId", exec.run_id.clone()),
            (
                "Type",
                info.r#type
                    .as_ref()
                    .map(|t| t.name.clone())
                    .unwrap_or_default(),
            ),
            ("Namespace", self.namespace.clone()),
            ("TaskQueue", info.task_queue.clone()),
            ("Status", status_text(info.status).to_string()),
            ("StartTime", time_text(info.start_time.as_ref())),
            ("ExecutionTime", time_text(info.execution_time.as_ref())),
        ];
        if info.close_time.is_some() {
            rows.push(("CloseTime", time_text(info.close_time.as_ref())));
        }
        rows.push((
            "StateTransitionCount",
            info.state_transition_count.to_string(),
        ));
        rows.push(("HistoryLength", info.history_length.to_string()));
        rows.push(("HistorySize", info.history_size_bytes.to_string()));
        if let Some(p) = &info.parent_execution {
            rows.push(("ParentWorkflowId", p.workflow_id.clone()));
            rows.push(("ParentRunId", p.run_id.clone()));
        }
        print_record(Some("Execution Info:"), &rows);
        println!();
        println!("Pending Activities: {}", resp.pending_activities.len());
        for a in &resp.pending_activities {
            println!(
                "  {} {} (attempt {})",
                a.activity_id,
                a.activity_type
                    .as_ref()
                    .map(|t| t.name.as_str())
                    .unwrap_or(""),
                a.attempt
            );
        }
        println!("Pending Child Workflows: {}", resp.pending_children.len());
        for c in &resp.pending_children {
            println!("  {} {}", c.workflow_id, c.workflow_type_name);
        }
        Ok(())
    }

    async fn history(
        &mut self,
        t: &Target,
        token: Vec<u8>,
        wait: bool,
    ) -> anyhow::Result<(Vec<HistoryEvent>, Vec<u8>)> {
        let resp = self
            .wf
            .get_workflow_execution_history(ws::GetWorkflowExecutionHistoryRequest {
                namespace: self.namespace.clone(),
                execution: self.execution(t),
                next_page_token: token,
                wait_new_event: wait,
                ..Default::default()
            })
            .await
            .map_err(rpc("failed reading history"))?
            .into_inner();
        Ok((
            resp.history.map(|h| h.events).unwrap_or_default(),
            resp.next_page_token,
        ))
    }

    async fn show(&mut self, t: &Target, follow: bool) -> anyhow::Result<()> {
        // One run throughout, even if the workflow moves on to another while it is read.
        let mut run = t.clone();
        if run.run_id.is_empty() {
            run.run_id = self
                .describe_raw(t)
                .await?
                .workflow_execution_info
                .and_then(|i| i.execution)
                .map(|e| e.run_id)
                .unwrap_or_default();
        }
        let t = &run;
        let mut events = Vec::new();
        let mut token = Vec::new();
        let mut printed_header = false;
        loop {
            let (page, next) = self.history(t, token, follow).await?;
            if self.output == Output::Text {
                if !printed_header {
                    println!("Progress:");
                    printed_header = true;
                }
                for e in &page {
                    println!(
                        "  {:>3}  {}  {}",
                        e.event_id,
                        time_text(e.event_time.as_ref()),
                        event_name(e.event_type)
                    );
                }
            }
            events.extend(page);
            if next.is_empty() {
                break;
            }
            token = next;
        }
        if self.output == Output::Json {
            let list: Vec<Value> = events.iter().map(event_json).collect();
            print_json(&json!({"events": list}));
            return Ok(());
        }
        if let Some(last) = events.last() {
            print_outcome(last);
        }
        Ok(())
    }

    async fn result(&mut self, t: &Target) -> anyhow::Result<()> {
        let mut target = t.clone();
        let close = loop {
            let mut token = Vec::new();
            // The close-event long poll answers empty (with a token) while the run is open.
            let close = loop {
                let resp = self
                    .wf
                    .get_workflow_execution_history(ws::GetWorkflowExecutionHistoryRequest {
                        namespace: self.namespace.clone(),
                        execution: self.execution(&target),
                        wait_new_event: true,
                        history_event_filter_type: HistoryEventFilterType::CloseEvent as i32,
                        next_page_token: token,
                        ..Default::default()
                    })
                    .await
                    .map_err(rpc("failed reading the result"))?
                    .into_inner();
                if let Some(e) = resp.history.and_then(|h| h.events.into_iter().last()) {
                    break e;
                }
                if resp.next_page_token.is_empty() {
                    bail!("the workflow has no close event");
                }
                token = resp.next_page_token;
            };
            // A run continued by continue-as-new, a retry or a cron schedule: follow the chain.
            use history_event::Attributes as A;
            let next = match &close.attributes {
                Some(A::WorkflowExecutionContinuedAsNewEventAttributes(a)) => {
                    a.new_execution_run_id.clone()
                }
                Some(A::WorkflowExecutionFailedEventAttributes(a)) => {
                    a.new_execution_run_id.clone()
                }
                Some(A::WorkflowExecutionTimedOutEventAttributes(a)) => {
                    a.new_execution_run_id.clone()
                }
                _ => String::new(),
            };
            if next.is_empty() {
                break close;
            }
            target.run_id = next;
        };
        if self.output == Output::Json {
            print_json(&event_json(&close));
        } else {
            print_outcome(&close);
        }
        match close.event_type() {
            EventType::WorkflowExecutionCompleted => Ok(()),
            _ => bail!("workflow {}", status_word(close.event_type())),
        }
    }

    async fn query(
        &mut self,
        t: &Target,
        query_type: &str,
        args: Option<Payloads>,
    ) -> anyhow::Result<()> {
        let resp = self
            .wf
            .query_workflow(ws::QueryWorkflowRequest {
                namespace: self.namespace.clone(),
                execution: self.execution(t),
                query: Some(temporalio_protos::temporal::api::query::v1::WorkflowQuery {
                    query_type: query_type.to_string(),
                    query_args: args,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .map_err(rpc("failed querying workflow"))?
            .into_inner();
        if let Some(rejected) = resp.query_rejected {
            bail!(
                "query rejected: workflow is {}",
                status_text(rejected.status)
            );
        }
        let v = payloads_value(resp.query_result.as_ref());
        if self.output == Output::Json {
            print_json(&json!({"queryResult": v}));
        } else {
            println!("Query result:");
            println!(
                "  {}",
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            );
        }
        Ok(())
    }

    async fn update(
        &mut self,
        t: &Target,
        name: &str,
        input: &[String],
        update_id: Option<String>,
    ) -> anyhow::Result<()> {
        use temporalio_protos::temporal::api::update::v1 as up;
        let update_id = update_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let request = up::Request {
            meta: Some(up::Meta {
                update_id: update_id.clone(),
                identity: identity(),
            }),
            input: Some(up::Input {
                name: name.to_string(),
                args: payloads(input)?,
                ..Default::default()
            }),
            ..Default::default()
        };
        let completed = temporalio_protos::temporal::api::enums::v1::UpdateWorkflowExecutionLifecycleStage::Completed as i32;
        let first = self
            .wf
            .update_workflow_execution(ws::UpdateWorkflowExecutionRequest {
                namespace: self.namespace.clone(),
                workflow_execution: self.execution(t),
                request: Some(request),
                wait_policy: Some(up::WaitPolicy {
                    lifecycle_stage: completed,
                }),
                ..Default::default()
            })
            .await
            .map_err(rpc("failed to update workflow"))?
            .into_inner();
        // Not done yet: wait on this update of this run (never sending it again, which another
        // run would take as a new update).
        let outcome = match first.outcome {
            Some(outcome) => outcome,
            None => loop {
                let resp = self
                    .wf
                    .poll_workflow_execution_update(ws::PollWorkflowExecutionUpdateRequest {
                        namespace: self.namespace.clone(),
                        update_ref: first.update_ref.clone(),
                        identity: identity(),
                        wait_policy: Some(up::WaitPolicy {
                            lifecycle_stage: completed,
                        }),
                    })
                    .await
                    .map_err(rpc("failed waiting for the update"))?
                    .into_inner();
                if let Some(outcome) = resp.outcome {
                    break outcome;
                }
            },
        };
        match outcome.value {
            Some(up::outcome::Value::Success(p)) => {
                let v = payloads_value(Some(&p));
                if self.output == Output::Json {
                    print_json(&json!({"updateId": update_id, "result": v}));
                } else {
                    print_record(
                        None,
                        &[
                            ("UpdateName", name.to_string()),
                            ("UpdateID", update_id),
                            ("Result", v.to_string()),
                        ],
                    );
                }
                Ok(())
            }
            Some(up::outcome::Value::Failure(f)) => bail!("update failed: {}", f.message),
            None => bail!("update has no outcome"),
        }
    }

    async fn reset(
        &mut self,
        t: &Target,
        event_id: Option<i64>,
        reset_type: Option<String>,
        reason: String,
    ) -> anyhow::Result<()> {
        let event_id = match (event_id, reset_type.as_deref()) {
            (Some(id), None) => id,
            (None, Some(kind @ ("FirstWorkflowTask" | "LastWorkflowTask"))) => {
                let mut finished = Vec::new();
                let mut token = Vec::new();
                loop {
                    let (page, next) = self.history(t, token, false).await?;
                    finished.extend(
                        page.iter()
                            .filter(|e| e.event_type() == EventType::WorkflowTaskCompleted)
                            .map(|e| e.event_id),
                    );
                    if next.is_empty() {
                        break;
                    }
                    token = next;
                }
                let pick = if kind == "FirstWorkflowTask" {
                    finished.first()
                } else {
                    finished.last()
                };
                *pick.context("the workflow has no completed workflow task to reset to")?
            }
            (None, Some(other)) => {
                bail!("unknown reset type {other:?}: use FirstWorkflowTask or LastWorkflowTask")
            }
            _ => bail!("give exactly one of --event-id and --type"),
        };
        if self.output == Output::Text {
            println!(
                "Resetting workflow {} to event ID {event_id}",
                t.workflow_id
            );
        }
        let resp = self
            .wf
            .reset_workflow_execution(ws::ResetWorkflowExecutionRequest {
                namespace: self.namespace.clone(),
                workflow_execution: self.execution(t),
                reason,
                workflow_task_finish_event_id: event_id,
                request_id: uuid::Uuid::new_v4().to_string(),
                identity: identity(),
                ..Default::default()
            })
            .await
            .map_err(rpc("failed to reset workflow"))?
            .into_inner();
        if self.output == Output::Json {
            print_json(&json!({"runId": resp.run_id}));
        } else {
            print_record(None, &[("RunId", resp.run_id)]);
        }
        Ok(())
    }
}

/// `WorkflowExecutionStarted` for `EVENT_TYPE_WORKFLOW_EXECUTION_STARTED`.
fn event_name(t: i32) -> String {
    let name = EventType::try_from(t)
        .map(|e| e.as_str_name())
        .unwrap_or("EVENT_TYPE_UNSPECIFIED");
    name.trim_start_matches("EVENT_TYPE_")
        .split('_')
        .map(|w| {
            let mut c = w.to_lowercase();
            if let Some(f) = c.get_mut(0..1) {
                f.make_ascii_uppercase();
            }
            c
        })
        .collect()
}

fn status_word(t: EventType) -> &'static str {
    match t {
        EventType::WorkflowExecutionFailed => "failed",
        EventType::WorkflowExecutionTimedOut => "timed out",
        EventType::WorkflowExecutionCanceled => "canceled",
        EventType::WorkflowExecutionTerminated => "terminated",
        EventType::WorkflowExecutionContinuedAsNew => "continued as new",
        _ => "did not complete",
    }
}

fn event_json(e: &HistoryEvent) -> Value {
    let mut v = json!({
        "eventId": e.event_id.to_string(),
        "eventTime": time_json(e.event_time.as_ref()),
        "eventType": EventType::try_from(e.event_type)
            .map(|t| t.as_str_name())
            .unwrap_or("EVENT_TYPE_UNSPECIFIED"),
    });
    use history_event::Attributes as A;
    let extra = match &e.attributes {
        Some(A::WorkflowExecutionCompletedEventAttributes(a)) => {
            json!({"result": payloads_value(a.result.as_ref())})
        }
        Some(A::WorkflowExecutionFailedEventAttributes(a)) => {
            json!({"failure": a.failure.as_ref().map(|f| f.message.clone())})
        }
        Some(A::WorkflowExecutionTerminatedEventAttributes(a)) => json!({"reason": a.reason}),
        Some(A::WorkflowExecutionSignaledEventAttributes(a)) => {
            json!({"signalName": a.signal_name, "input": payloads_value(a.input.as_ref())})
        }
        Some(A::ActivityTaskScheduledEventAttributes(a)) => json!({
            "activityId": a.activity_id,
            "activityType": a.activity_type.as_ref().map(|t| t.name.clone()),
        }),
        Some(A::ActivityTaskCompletedEventAttributes(a)) => {
            json!({"result": payloads_value(a.result.as_ref())})
        }
        _ => Value::Null,
    };
    if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), extra) {
        obj.extend(more);
    }
    v
}

fn print_outcome(close: &HistoryEvent) {
    use history_event::Attributes as A;
    match &close.attributes {
        Some(A::WorkflowExecutionCompletedEventAttributes(a)) => {
            println!("Results:");
            print_record(
                None,
                &[
                    ("Status", "COMPLETED".to_string()),
                    ("Result", payloads_value(a.result.as_ref()).to_string()),
                ],
            );
        }
        Some(A::WorkflowExecutionFailedEventAttributes(a)) => {
            println!("Results:");
            print_record(
                None,
                &[
                    ("Status", "FAILED".to_string()),
                    (
                        "Failure",
                        a.failure
                            .as_ref()
                            .map(|f| f.message.clone())
                            .unwrap_or_default(),
                    ),
                ],
            );
        }
        Some(A::WorkflowExecutionTerminatedEventAttributes(a)) => {
            println!("Results:");
            print_record(
                None,
                &[
                    ("Status", "TERMINATED".to_string()),
                    ("Reason", a.reason.clone()),
                ],
            );
        }
        Some(A::WorkflowExecutionCanceledEventAttributes(_)) => {
            println!("Results:");
            print_record(None, &[("Status", "CANCELED".to_string())]);
        }
        Some(A::WorkflowExecutionTimedOutEventAttributes(_)) => {
            println!("Results:");
            print_record(None, &[("Status", "TIMEOUT".to_string())]);
        }
        _ => {}
    }
}

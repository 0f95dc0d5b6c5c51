//! State-machine tests: inputs in, event types and tasks out, on a hand-driven `now`.
use std::time::{Duration, SystemTime};

use temporalio_protos::temporal::api::command::v1::{
    Command, CompleteWorkflowExecutionCommandAttributes,
    RequestCancelActivityTaskCommandAttributes, ScheduleActivityTaskCommandAttributes,
    StartTimerCommandAttributes, command,
};
use temporalio_protos::temporal::api::common::v1::{ActivityType, RetryPolicy};
use temporalio_protos::temporal::api::enums::v1::{
    CommandType, EventType, RetryState, TimeoutType,
};
use temporalio_protos::temporal::api::failure::v1::{ApplicationFailureInfo, Failure, failure};
use temporalio_protos::temporal::api::history::v1::{
    WorkflowExecutionStartedEventAttributes, history_event,
};
use temporalio_protos::temporal::api::workflowservice::v1::RespondWorkflowTaskCompletedRequest;

use super::*;

struct Run {
    ms: MutableState,
    now: SystemTime,
    ids: CounterIds,
    history: Vec<HistoryEvent>,
    timers: Vec<NewTimer>,
    /// Timer rows as the store would hold them: written minus deleted (by `settle_timers`).
    stored: std::collections::BTreeMap<i64, TimerKind>,
    limits: HistoryLimits,
    /// Signals the run may receive and children it may have pending (0: no limit).
    max_signals: usize,
    max_children: usize,
    /// Registered custom search attributes (None: not checked).
    search_attributes: Option<Vec<&'static str>>,
    /// `limit.blobSize.error` (0: no limit).
    blob_limit: usize,
}

impl Run {
    fn start() -> Self {
        let mut run = Run {
            ms: MutableState {
                namespace_id: "ns".into(),
                workflow_id: "wf".into(),
                run_id: "run".into(),
                task_queue: "tq".into(),
                next_event_id: 1,
                wft_timeout: kairos_core::time::to_pb_duration(Duration::from_secs(10)),
                ..Default::default()
            },
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
            ids: CounterIds::default(),
            history: Vec::new(),
            timers: Vec::new(),
            stored: Default::default(),
            limits: HistoryLimits::from_limits(&kairos_core::config::Limits::default()),
            max_signals: 0,
            max_children: 0,
            search_attributes: None,
            blob_limit: 0,
        };
        run.step(|t| t.start_workflow(WorkflowExecutionStartedEventAttributes::default()));
        run
    }

    fn step<T>(&mut self, f: impl FnOnce(&mut Transition<'_>) -> T) -> T {
        let env = Env {
            sticky_alive: true,
            retention: Duration::from_secs(86400),
            max_pending_activities: 2000,
            max_signals: self.max_signals,
            max_pending_children: self.max_children,
            search_attributes: self.search_attributes.as_ref().map(|names| {
                (
                    "default".to_string(),
                    std::sync::Arc::new(names.iter().map(|n| (n.to_string(), 2)).collect()),
                )
            }),
            history: self.limits,
            blob_size_error: self.blob_limit,
            ..Default::default()
        };
        let before = self.ms.clone();
        let mut t = Transition::new(&mut self.ms, self.now, env, &mut self.ids);
        let out = f(&mut t);
        let events = std::mem::take(&mut t.events);
        let new = std::mem::take(&mut t.timers);
        let changes = settle_timers(&before, &mut self.ms, new.clone());
        for (id, timer) in &changes.write {
            let kind = TimerKind::try_from(timer.data.kind).expect("known kind");
            self.stored.insert(*id, kind);
        }
        for gone in &changes.delete {
            self.stored.remove(&gone.task_id);
        }
        self.history.extend(events);
        self.timers.extend(new.into_iter().map(|(_, timer)| timer));
        out
    }

    /// Polls and completes the current workflow task with `commands`.
    fn complete(&mut self, commands: Vec<Command>) -> CompletionOutcome {
        let scheduled = self
            .ms
            .wft
            .as_ref()
            .expect("a workflow task is scheduled")
            .scheduled_event_id;
        let attempt = self.ms.wft.as_ref().expect("scheduled").attempt;
        self.step(|t| t.start_wft(scheduled, "worker", "req"))
            .expect("starts");
        self.respond(scheduled, attempt, commands)
    }

    fn respond(
        &mut self,
        scheduled: i64,
        attempt: i32,
        commands: Vec<Command>,
    ) -> CompletionOutcome {
        let req = RespondWorkflowTaskCompletedRequest {
            commands,
            identity: "worker".into(),
            ..Default::default()
        };
        self.step(|t| t.complete_wft(scheduled, attempt, &req))
            .expect("completes")
    }

    fn types(&self) -> Vec<EventType> {
        self.history.iter().map(|e| e.event_type()).collect()
    }

    fn check_ids(&self) {
        for (i, e) in self.history.iter().enumerate() {
            assert_eq!(e.event_id, i as i64 + 1, "event ids are contiguous");
        }
    }
}

fn schedule_activity(id: &str, retry: Option<RetryPolicy>) -> Command {
    Command {
        command_type: CommandType::ScheduleActivityTask as i32,
        attributes: Some(command::Attributes::ScheduleActivityTaskCommandAttributes(
            ScheduleActivityTaskCommandAttributes {
                activity_id: id.into(),
                activity_type: Some(ActivityType { name: "act".into() }),
                start_to_close_timeout: kairos_core::time::to_pb_duration(Duration::from_secs(5)),
                retry_policy: retry,
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

fn complete_workflow() -> Command {
    Command {
        command_type: CommandType::CompleteWorkflowExecution as i32,
        attributes: Some(
            command::Attributes::CompleteWorkflowExecutionCommandAttributes(
                CompleteWorkflowExecutionCommandAttributes::default(),
            ),
        ),
        ..Default::default()
    }
}

fn app_failure(non_retryable: bool) -> Failure {
    Failure {
        message: "boom".into(),
        failure_info: Some(failure::FailureInfo::ApplicationFailureInfo(
            ApplicationFailureInfo {
                r#type: "Boom".into(),
                non_retryable,
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

use EventType as E;

#[test]
fn start_writes_started_and_scheduled() {
    let run = Run::start();
    assert_eq!(
        run.types(),
        vec![E::WorkflowExecutionStarted, E::WorkflowTaskScheduled]
    );
    run.check_ids();
}

#[test]
fn activity_round_trip_writes_lazy_started_before_completed() {
    let mut run = Run::start();
    run.complete(vec![schedule_activity("a1", None)]);
    let scheduled = 5;
    run.step(|t| t.start_activity(scheduled, 1, "w", "r"))
        .expect("starts");
    run.step(|t| t.complete_activity(scheduled, 1, None, "w"))
        .expect("completes");
    run.complete(vec![complete_workflow()]);
    assert_eq!(
        run.types(),
        vec![
            E::WorkflowExecutionStarted,
            E::WorkflowTaskScheduled,
            E::WorkflowTaskStarted,
            E::WorkflowTaskCompleted,
            E::ActivityTaskScheduled,
            E::ActivityTaskStarted,
            E::ActivityTaskCompleted,
            E::WorkflowTaskScheduled,
            E::WorkflowTaskStarted,
            E::WorkflowTaskCompleted,
            E::WorkflowExecutionCompleted,
        ]
    );
    run.check_ids();
    assert_eq!(run.ms.status, WorkflowExecutionStatus::Completed as i32);
}

#[test]
fn events_during_a_started_task_are_buffered_and_close_events_flushed_last() {
    let mut run = Run::start();
    run.complete(vec![
        schedule_activity("a1", None),
        schedule_activity("a2", None),
    ]);
    for s in [5, 6] {
        run.step(|t| t.start_activity(s, 1, "w", "r"))
            .expect("starts");
    }
    run.step(|t| t.complete_activity(5, 1, None, "w"))
        .expect("completes");
    // A task is now scheduled; start it, then the second activity finishes meanwhile.
    let wft = run.ms.wft.clone().expect("scheduled");
    run.step(|t| t.start_wft(wft.scheduled_event_id, "worker", "r2"))
        .expect("starts");
    run.step(|t| t.complete_activity(6, 1, None, "w"))
        .expect("completes");
    assert_eq!(run.ms.buffered.len(), 2, "started + completed are buffered");
    let outcome = run.respond(
        wft.scheduled_event_id,
        wft.attempt,
        vec![complete_workflow()],
    );
    assert_eq!(
        outcome,
        CompletionOutcome::Failed {
            cause: temporalio_protos::temporal::api::enums::v1::WorkflowTaskFailedCause::UnhandledCommand,
            message: "UnhandledCommand".into()
        }
    );
    let tail: Vec<_> = run.types().into_iter().skip(10).collect();
    assert_eq!(
        tail,
        vec![
            E::WorkflowTaskFailed,
            E::ActivityTaskStarted,
            E::ActivityTaskCompleted,
            E::WorkflowTaskScheduled
        ]
    );
    run.check_ids();
    let completed = run
        .history
        .iter()
        .find(|e| e.event_id == 13)
        .expect("event 13");
    match &completed.attributes {
        Some(history_event::Attributes::ActivityTaskCompletedEventAttributes(a)) => {
            assert_eq!(
                a.started_event_id, 12,
                "the buffered started id is patched at flush"
            )
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn activity_retries_with_exponential_backoff_then_gives_up() {
    let mut run = Run::start();
    let policy = RetryPolicy {
        initial_interval: kairos_core::time::to_pb_duration(Duration::from_secs(1)),
        backoff_coefficient: 2.0,
        maximum_attempts: 3,
        ..Default::default()
    };
    run.complete(vec![schedule_activity("a1", Some(policy))]);
    let mut delays = Vec::new();
    for attempt in 1..=3 {
        run.step(|t| t.start_activity(5, attempt, "w", "r"))
            .expect("starts");
        run.timers.clear();
        run.step(|t| t.fail_activity(5, attempt, app_failure(false), None, "w"))
            .expect("fails");
        if let Some(timer) = run
            .timers
            .iter()
            .find(|t| t.data.kind == TimerKind::ActivityRetry as i32)
        {
            delays.push(timer.fire_at.duration_since(run.now).expect("future"));
            run.step(|t| t.activity_retry_fired(5, attempt + 1));
        }
    }
    assert_eq!(delays, vec![Duration::from_secs(1), Duration::from_secs(2)]);
    assert_eq!(
        run.types().last(),
        Some(&E::WorkflowTaskScheduled),
        "a workflow task follows the failure"
    );
    let failed = run
        .history
        .iter()
        .find_map(|e| match &e.attributes {
            Some(history_event::Attributes::ActivityTaskFailedEventAttributes(a)) => {
                Some(a.clone())
            }
            _ => None,
        })
        .expect("failed event");
    assert_eq!(
        failed.retry_state,
        RetryState::MaximumAttemptsReached as i32
    );
    let started = run
        .history
        .iter()
        .find_map(|e| match &e.attributes {
            Some(history_event::Attributes::ActivityTaskStartedEventAttributes(a)) => {
                Some(a.clone())
            }
            _ => None,
        })
        .expect("started event");
    assert_eq!(
        started.attempt, 3,
        "the started event records the final attempt"
    );
    assert!(started.last_failure.is_some());
}

#[test]
fn non_retryable_failure_stops_at_once() {
    let mut run = Run::start();
    run.complete(vec![schedule_activity("a1", None)]);
    run.step(|t| t.start_activity(5, 1, "w", "r"))
        .expect("starts");
    run.step(|t| t.fail_activity(5, 1, app_failure(true), None, "w"))
        .expect("fails");
    assert!(run.types().contains(&E::ActivityTaskFailed));
}

#[test]
fn start_to_close_timeout_retries_then_heartbeat_rearms() {
    let mut run = Run::start();
    run.complete(vec![schedule_activity("a1", None)]);
    run.step(|t| t.start_activity(5, 1, "w", "r"))
        .expect("starts");
    run.now += Duration::from_secs(5);
    run.step(|t| t.activity_timeout(5, 1, TimeoutType::StartToClose));
    assert_eq!(
        run.ms.activities[0].attempt, 2,
        "timed out attempt is retried"
    );
    assert!(!run.types().contains(&E::ActivityTaskTimedOut));
}

#[test]
fn cancel_of_unstarted_activity_writes_canceled_and_a_new_task() {
    let mut run = Run::start();
    let timer = Command {
        command_type: CommandType::StartTimer as i32,
        attributes: Some(command::Attributes::StartTimerCommandAttributes(
            StartTimerCommandAttributes {
                timer_id: "t".into(),
                start_to_fire_timeout: kairos_core::time::to_pb_duration(Duration::from_secs(1)),
            },
        )),
        ..Default::default()
    };
    run.complete(vec![schedule_activity("a1", None), timer]);
    let timer_started = run.ms.timers[0].started_event_id;
    run.step(|t| t.user_timer_fired(timer_started));
    let cancel = Command {
        command_type: CommandType::RequestCancelActivityTask as i32,
        attributes: Some(
            command::Attributes::RequestCancelActivityTaskCommandAttributes(
                RequestCancelActivityTaskCommandAttributes {
                    scheduled_event_id: 5,
                },
            ),
        ),
        ..Default::default()
    };
    run.complete(vec![cancel]);
    let tail: Vec<_> = run.types().into_iter().skip(10).collect();
    assert_eq!(
        tail,
        vec![
            E::ActivityTaskCancelRequested,
            E::ActivityTaskCanceled,
            E::WorkflowTaskScheduled
        ]
    );
    assert!(run.ms.activities.is_empty());
}

#[test]
fn timer_fires_and_duplicate_id_fails_the_task() {
    let mut run = Run::start();
    let timer = |id: &str| Command {
        command_type: CommandType::StartTimer as i32,
        attributes: Some(command::Attributes::StartTimerCommandAttributes(
            StartTimerCommandAttributes {
                timer_id: id.into(),
                start_to_fire_timeout: kairos_core::time::to_pb_duration(Duration::from_secs(3)),
            },
        )),
        ..Default::default()
    };
    let outcome = run.complete(vec![timer("t"), timer("t")]);
    assert!(matches!(outcome, CompletionOutcome::Failed { .. }));
    assert_eq!(run.ms.wft_attempt, 2);
    run.complete(vec![timer("t")]);
    let started_id = run.ms.timers[0].started_event_id;
    run.step(|t| t.user_timer_fired(started_id));
    assert_eq!(run.types().last(), Some(&E::WorkflowTaskScheduled));
    assert!(run.types().contains(&E::TimerFired));
    run.check_ids();
}

#[test]
fn terminate_during_started_task_fails_it_first() {
    let mut run = Run::start();
    let wft = run.ms.wft.clone().expect("scheduled");
    run.step(|t| t.start_wft(wft.scheduled_event_id, "w", "r"))
        .expect("starts");
    run.step(|t| t.terminate("stop", None, "me"))
        .expect("terminates");
    assert_eq!(
        run.types(),
        vec![
            E::WorkflowExecutionStarted,
            E::WorkflowTaskScheduled,
            E::WorkflowTaskStarted,
            E::WorkflowTaskFailed,
            E::WorkflowExecutionTerminated
        ]
    );
    assert!(
        run.timers
            .iter()
            .any(|t| t.data.kind == TimerKind::DeleteExecution as i32)
    );
}

#[test]
fn stale_tokens_are_not_found() {
    let mut run = Run::start();
    let err = run
        .step(|t| t.start_wft(99, "w", "r"))
        .expect_err("no such task");
    assert!(matches!(err, StateError::NotFound(_)));
    let err = run
        .step(|t| t.complete_activity(5, 1, None, "w"))
        .expect_err("no such activity");
    assert!(matches!(err, StateError::NotFound(_)));
}

#[test]
fn long_history_suggests_continue_as_new_then_is_terminated() {
    let mut run = Run::start();
    run.limits = HistoryLimits {
        count_error: 12,
        size_error: i64::MAX,
        count_suggest: 6,
        size_suggest: i64::MAX,
    };
    let started_attrs = |run: &Run| match &run
        .history
        .iter()
        .rev()
        .find(|e| e.event_type() == E::WorkflowTaskStarted)
        .expect("a started task")
        .attributes
    {
        Some(history_event::Attributes::WorkflowTaskStartedEventAttributes(a)) => a.clone(),
        other => panic!("unexpected {other:?}"),
    };
    // Events 1-2 exist; the first task starts at 3: below the suggestion threshold.
    run.complete(vec![schedule_activity("a1", None)]);
    assert!(!started_attrs(&run).suggest_continue_as_new);
    let act = |run: &Run| run.ms.activities[0].scheduled_event_id;
    let id = act(&run);
    run.step(|t| t.start_activity(id, 1, "w", "r"))
        .expect("starts");
    run.step(|t| t.complete_activity(id, 1, None, "w"))
        .expect("completes");
    // The second task starts past event 6: continue-as-new is suggested, with its reason.
    run.complete(vec![schedule_activity("a2", None)]);
    let attrs = started_attrs(&run);
    assert!(attrs.suggest_continue_as_new);
    assert_eq!(
        attrs.suggest_continue_as_new_reasons,
        vec![SuggestContinueAsNewReason::TooManyHistoryEvents as i32]
    );
    let id = act(&run);
    run.step(|t| t.start_activity(id, 1, "w", "r"))
        .expect("starts");
    run.step(|t| t.complete_activity(id, 1, None, "w"))
        .expect("completes");
    // Past 12 events at a completion: the run is terminated with the reference's reason.
    run.complete(vec![schedule_activity("a3", None)]);
    assert_eq!(run.types().last(), Some(&E::WorkflowExecutionTerminated));
    match &run.history.last().expect("event").attributes {
        Some(history_event::Attributes::WorkflowExecutionTerminatedEventAttributes(a)) => {
            assert_eq!(a.reason, HISTORY_COUNT_EXCEEDED);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(run.ms.status, WorkflowExecutionStatus::Terminated as i32);
    run.check_ids();
}

#[test]
fn a_started_workflow_task_that_times_out_is_retried_and_a_late_answer_is_refused() {
    let mut run = Run::start();
    let (scheduled, attempt) = {
        let wft = run.ms.wft.as_ref().expect("scheduled");
        (wft.scheduled_event_id, wft.attempt)
    };
    run.step(|t| t.start_wft(scheduled, "worker", "req"))
        .expect("starts");
    // The start-to-close timer (the task timeout, 10 s) fires.
    run.now += Duration::from_secs(10);
    run.step(|t| t.wft_timeout(scheduled, attempt, TimeoutType::StartToClose));
    let types = run.types();
    assert_eq!(
        &types[types.len() - 2..],
        &[E::WorkflowTaskTimedOut, E::WorkflowTaskScheduled]
    );
    let retry = run.ms.wft.clone().expect("a new task");
    assert_eq!(retry.attempt, 2);
    // The worker that lost the task answers late: refused, nothing written.
    let before = run.history.len();
    let req = RespondWorkflowTaskCompletedRequest::default();
    assert!(
        run.step(|t| t.complete_wft(scheduled, attempt, &req))
            .is_err()
    );
    assert_eq!(run.history.len(), before);
    // A stale timer for the old attempt does nothing either.
    run.step(|t| t.wft_timeout(scheduled, attempt, TimeoutType::StartToClose));
    assert_eq!(run.history.len(), before);
    // The retried task completes normally.
    run.complete(vec![complete_workflow()]);
    assert_eq!(run.types().last(), Some(&E::WorkflowExecutionCompleted));
    run.check_ids();
}

#[test]
fn timer_rows_go_with_what_they_time() {
    let mut run = Run::start();
    let scheduled = run.ms.wft.as_ref().expect("scheduled").scheduled_event_id;
    run.step(|t| t.start_wft(scheduled, "worker", "req"))
        .expect("starts");
    assert_eq!(
        run.stored.values().collect::<Vec<_>>(),
        vec![&TimerKind::WorkflowTaskTimeout],
        "the started task's start-to-close timer is stored"
    );
    let policy = RetryPolicy {
        initial_interval: kairos_core::time::to_pb_duration(Duration::from_secs(1)),
        maximum_attempts: 3,
        ..Default::default()
    };
    let mut cmd = schedule_activity("a1", Some(policy));
    if let Some(command::Attributes::ScheduleActivityTaskCommandAttributes(a)) =
        cmd.attributes.as_mut()
    {
        a.schedule_to_close_timeout = kairos_core::time::to_pb_duration(Duration::from_secs(60));
    }
    run.respond(scheduled, 1, vec![cmd]);
    assert_eq!(
        run.stored.values().collect::<Vec<_>>(),
        vec![&TimerKind::ActivityTimeout, &TimerKind::ActivityTimeout],
        "completing the workflow task deleted its timer; schedule-to-close and \
         schedule-to-start (defaulted from it) are stored"
    );
    run.step(|t| t.start_activity(5, 1, "w", "r"))
        .expect("starts");
    assert_eq!(run.stored.len(), 3, "plus start-to-close: {:?}", run.stored);
    run.step(|t| t.fail_activity(5, 1, app_failure(false), None, "w"))
        .expect("fails");
    let mut kinds: Vec<_> = run.stored.values().copied().collect();
    kinds.sort_by_key(|k| *k as i32);
    assert_eq!(
        kinds,
        vec![TimerKind::ActivityTimeout, TimerKind::ActivityRetry],
        "the failed attempt's timers went; schedule-to-close and the backoff stay"
    );
    run.step(|t| t.activity_retry_fired(5, 2));
    run.step(|t| t.start_activity(5, 2, "w", "r2"))
        .expect("starts");
    run.step(|t| t.complete_activity(5, 2, None, "w"))
        .expect("completes");
    assert!(
        run.stored.is_empty(),
        "nothing of the finished activity is left: {:?}",
        run.stored
    );
    run.complete(vec![complete_workflow()]);
    assert!(
        run.stored
            .values()
            .all(|k| *k == TimerKind::DeleteExecution),
        "a closed run keeps only its retention timer: {:?}",
        run.stored
    );
}

#[test]
fn eagerly_requested_activities_start_inside_the_completion() {
    let mut run = Run::start();
    let scheduled = run.ms.wft.as_ref().expect("scheduled").scheduled_event_id;
    run.step(|t| t.start_wft(scheduled, "worker", "req"))
        .expect("starts");
    let eager = |id: &str, queue: &str| {
        let mut cmd = schedule_activity(id, None);
        if let Some(command::Attributes::ScheduleActivityTaskCommandAttributes(a)) =
            cmd.attributes.as_mut()
        {
            a.request_eager_execution = true;
            a.task_queue = Some(temporalio_protos::temporal::api::taskqueue::v1::TaskQueue {
                name: queue.into(),
                ..Default::default()
            });
        }
        cmd
    };
    let req = RespondWorkflowTaskCompletedRequest {
        commands: vec![
            eager("a1", "tq"),
            eager("other-queue", "elsewhere"),
            schedule_activity("not-asked", None),
        ],
        identity: "worker".into(),
        ..Default::default()
    };
    let (started, transfers, done) = run.step(|t| {
        t.complete_wft(scheduled, 1, &req).expect("completes");
        let started = t.start_eager_activities(&req);
        (started, t.transfers.clone(), t.transfers_done.clone())
    });
    assert_eq!(
        started
            .iter()
            .map(|a| a.activity_id.as_str())
            .collect::<Vec<_>>(),
        vec!["a1"],
        "only the eager request on the run's own queue"
    );
    assert!(started[0].started && started[0].attempt == 1);
    let a1_task = started[0].transfer_task_id;
    assert!(
        transfers.iter().any(|(id, _)| *id == a1_task) && done.contains(&a1_task),
        "its dispatch task is created and taken in the same transition (never written)"
    );
    assert_eq!(
        run.ms.activities.iter().filter(|a| a.started).count(),
        1,
        "the other two wait for pollers"
    );
}

#[test]
fn a_repeatedly_failing_workflow_task_backs_off_from_its_third_attempt() {
    let mut run = Run::start();
    for attempt in 1..=2 {
        let scheduled = run.ms.wft.as_ref().expect("scheduled").scheduled_event_id;
        assert_eq!(run.ms.wft.as_ref().expect("scheduled").attempt, attempt);
        run.step(|t| t.start_wft(scheduled, "worker", "req"))
            .expect("starts");
        run.step(|t| {
            t.fail_wft(
                scheduled,
                attempt,
                WorkflowTaskFailedCause::WorkflowWorkerUnhandledFailure,
                None,
                "worker",
            )
        })
        .expect("fails");
    }
    assert!(run.ms.wft.is_none(), "the third attempt waits");
    assert!(run.ms.wft_backing_off);
    let backoff = run
        .timers
        .iter()
        .find(|t| t.data.kind == TimerKind::WorkflowTaskRetry as i32)
        .expect("a backoff timer");
    assert_eq!(
        backoff.fire_at.duration_since(run.now).expect("future"),
        Duration::from_secs(5)
    );
    // A signal meanwhile is written but does not cut the backoff short.
    run.step(|t| {
        t.signal(Signal {
            name: "poke".into(),
            ..Default::default()
        })
    })
    .expect("signalled");
    assert!(run.ms.wft.is_none());
    run.step(|t| t.wft_retry_fired());
    let wft = run.ms.wft.as_ref().expect("scheduled after the backoff");
    assert_eq!(wft.attempt, 3);
    assert_eq!(run.types().last(), Some(&E::WorkflowTaskScheduled));
    run.check_ids();
}

#[test]
fn a_signal_during_the_start_backoff_waits_for_it() {
    let mut run = Run::start();
    // A second run of the same shape, started with a 10 s start delay.
    run.ms = MutableState {
        next_event_id: 1,
        ..run.ms.clone()
    };
    run.ms.wft = None;
    run.history.clear();
    run.step(|t| {
        t.start_workflow(WorkflowExecutionStartedEventAttributes {
            first_workflow_task_backoff: kairos_core::time::to_pb_duration(Duration::from_secs(10)),
            ..Default::default()
        })
    });
    assert!(run.ms.wft.is_none(), "the first task waits for the delay");
    run.step(|t| {
        t.signal(Signal {
            name: "early".into(),
            ..Default::default()
        })
    })
    .expect("signalled");
    assert!(
        run.ms.wft.is_none(),
        "a signal does not cut the delay short"
    );
    assert_eq!(run.types().last(), Some(&E::WorkflowExecutionSignaled));
    run.now += Duration::from_secs(10);
    run.step(|t| t.start_backoff_fired());
    assert!(
        run.ms.wft.is_some(),
        "the delay passed: the first task is scheduled"
    );
    run.check_ids();
}

#[test]
fn a_fired_timer_leaves_its_owner() {
    let mut run = Run::start();
    run.complete(vec![schedule_activity("a1", None)]);
    run.step(|t| t.start_activity(5, 1, "w", "r"))
        .expect("starts");
    let stc = run.ms.activities[0].timer_tasks.clone();
    assert!(!stc.is_empty());
    forget_timer(&mut run.ms, stc[0].task_id);
    assert!(
        run.ms.activities[0]
            .timer_tasks
            .iter()
            .all(|t| t.task_id != stc[0].task_id)
    );
}

fn start_child(id: &str) -> Command {
    use temporalio_protos::temporal::api::command::v1::StartChildWorkflowExecutionCommandAttributes;
    Command {
        command_type: CommandType::StartChildWorkflowExecution as i32,
        attributes: Some(
            command::Attributes::StartChildWorkflowExecutionCommandAttributes(
                StartChildWorkflowExecutionCommandAttributes {
                    workflow_id: id.into(),
                    workflow_type: Some(
                        temporalio_protos::temporal::api::common::v1::WorkflowType {
                            name: "child".into(),
                        },
                    ),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    }
}

#[test]
fn signals_past_the_per_run_limit_are_refused_but_retries_of_applied_ones_are_not() {
    let mut run = Run::start();
    run.max_signals = 2;
    let signal = |id: &str| Signal {
        name: "s".into(),
        request_id: id.into(),
        ..Default::default()
    };
    run.step(|t| t.signal(signal("a"))).expect("first");
    run.step(|t| t.signal(signal("b"))).expect("second");
    let err = run.step(|t| t.signal(signal("c"))).expect_err("third");
    assert_eq!(
        err,
        StateError::Invalid("exceeded workflow execution limit for signal events".into())
    );
    // A retry of a signal already applied is still answered as applied.
    run.step(|t| t.signal(signal("b")))
        .expect("retry of the second");
    let signaled = run
        .types()
        .into_iter()
        .filter(|t| *t == EventType::WorkflowExecutionSignaled)
        .count();
    assert_eq!(signaled, 2);
}

#[test]
fn children_past_the_pending_limit_fail_the_workflow_task() {
    let mut run = Run::start();
    run.max_children = 1;
    let out = run.complete(vec![start_child("a"), start_child("b")]);
    assert!(matches!(
        out,
        CompletionOutcome::Failed {
            cause: WorkflowTaskFailedCause::PendingChildWorkflowsLimitExceeded,
            ..
        }
    ));
    assert!(
        run.ms.children.is_empty(),
        "nothing of the refused batch stays"
    );
    let out = run.complete(vec![start_child("a")]);
    assert_eq!(out, CompletionOutcome::Applied);
    assert_eq!(run.ms.children.len(), 1);
    // One start task for the child, and the Initiated event.
    assert_eq!(
        run.types().last(),
        Some(&EventType::StartChildWorkflowExecutionInitiated)
    );
}

#[test]
fn a_child_closing_before_its_start_is_recorded_is_retried_then_reported_after_it() {
    let mut run = Run::start();
    run.complete(vec![start_child("kid")]);
    let initiated = run.ms.children[0].initiated_event_id;
    let close = event(
        EventType::WorkflowExecutionCompleted,
        hist::WorkflowExecutionCompletedEventAttributes::default(),
    );
    let kid = temporalio_protos::temporal::api::common::v1::WorkflowExecution {
        workflow_id: "kid".into(),
        run_id: "kid-run".into(),
    };
    let early = run
        .step(|t| t.child_closed(initiated, kid.clone(), &close))
        .expect("known child");
    assert!(!early, "not started yet: the close must wait");
    run.step(|t| {
        t.child_start_done(
            initiated,
            ChildStart::Started {
                run_id: "kid-run".into(),
            },
        )
    })
    .expect("started");
    assert!(
        run.step(|t| t.child_closed(initiated, kid, &close))
            .expect("known")
    );
    let types = run.types();
    let n = types.len();
    assert_eq!(
        &types[n - 3..],
        &[
            EventType::ChildWorkflowExecutionStarted,
            EventType::WorkflowTaskScheduled,
            EventType::ChildWorkflowExecutionCompleted,
        ]
    );
    assert!(run.ms.children.is_empty());
    run.check_ids();
}

#[test]
fn upserting_an_unregistered_search_attribute_fails_the_workflow_task() {
    use temporalio_protos::temporal::api::command::v1::UpsertWorkflowSearchAttributesCommandAttributes;
    use temporalio_protos::temporal::api::common::v1::{Payload, SearchAttributes};
    let upsert = |name: &str| Command {
        command_type: CommandType::UpsertWorkflowSearchAttributes as i32,
        attributes: Some(
            command::Attributes::UpsertWorkflowSearchAttributesCommandAttributes(
                UpsertWorkflowSearchAttributesCommandAttributes {
                    search_attributes: Some(SearchAttributes {
                        indexed_fields: [(name.to_string(), Payload::default())]
                            .into_iter()
                            .collect(),
                    }),
                },
            ),
        ),
        ..Default::default()
    };
    let mut run = Run::start();
    run.search_attributes = Some(vec!["CustomerId"]);
    let out = run.complete(vec![upsert("Nope")]);
    match out {
        CompletionOutcome::Failed { cause, message } => {
            assert_eq!(cause, WorkflowTaskFailedCause::BadSearchAttributes);
            assert_eq!(
                message,
                "Namespace default has no mapping defined for search attribute Nope"
            );
        }
        other => panic!("expected a failed task, got {other:?}"),
    }
    // A registered one, and a predefined one (no registration needed), are applied.
    assert_eq!(
        run.complete(vec![upsert("CustomerId"), upsert("TemporalChangeVersion")]),
        CompletionOutcome::Applied
    );
}

fn schedule_activity_with_input(id: &str, bytes: usize) -> Command {
    let mut cmd = schedule_activity(id, None);
    if let Some(command::Attributes::ScheduleActivityTaskCommandAttributes(a)) = &mut cmd.attributes
    {
        a.input = Some(Payloads {
            payloads: vec![temporalio_protos::temporal::api::common::v1::Payload {
                data: vec![b'x'; bytes],
                ..Default::default()
            }],
        });
    }
    cmd
}

#[test]
fn a_payload_past_the_blob_limit_terminates_the_run_unless_the_task_is_a_retry() {
    const TEXT: &str = "BadScheduleActivityAttributes: ScheduleActivityTaskCommandAttributes.Input exceeds size limit.";
    // Under the limit: applied.
    let mut run = Run::start();
    run.blob_limit = 100;
    assert_eq!(
        run.complete(vec![schedule_activity_with_input("a", 50)]),
        CompletionOutcome::Applied
    );
    // Past it on a first attempt: the task fails, then the run is terminated, both with the
    // reference's text, and nothing the completion asked for is written.
    let mut run = Run::start();
    run.blob_limit = 100;
    let outcome = run.complete(vec![
        schedule_activity_with_input("small", 10),
        schedule_activity_with_input("big", 200),
    ]);
    assert_eq!(
        outcome,
        CompletionOutcome::Failed {
            cause: WorkflowTaskFailedCause::BadScheduleActivityAttributes,
            message: TEXT.into(),
        }
    );
    assert_eq!(
        run.types()[3..],
        [E::WorkflowTaskFailed, E::WorkflowExecutionTerminated]
    );
    match &run.history[3].attributes {
        Some(history_event::Attributes::WorkflowTaskFailedEventAttributes(a)) => {
            assert_eq!(a.failure.as_ref().map(|f| f.message.as_str()), Some(TEXT));
            assert_eq!(a.identity, "worker");
        }
        other => panic!("unexpected {other:?}"),
    }
    match &run.history[4].attributes {
        Some(history_event::Attributes::WorkflowExecutionTerminatedEventAttributes(a)) => {
            assert_eq!(
                (a.reason.as_str(), a.identity.as_str()),
                (TEXT, "history-service")
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(run.ms.status, WorkflowExecutionStatus::Terminated as i32);
    assert!(run.ms.activities.is_empty() && run.ms.wft.is_none());
    run.check_ids();
    // On a retried task: refused, nothing written, the run goes on (the task times out).
    let mut run = Run::start();
    run.blob_limit = 100;
    let scheduled = run.ms.wft.as_ref().expect("scheduled").scheduled_event_id;
    run.step(|t| t.start_wft(scheduled, "worker", "req"))
        .expect("starts");
    run.step(|t| {
        t.fail_wft(
            scheduled,
            1,
            WorkflowTaskFailedCause::WorkflowWorkerUnhandledFailure,
            None,
            "worker",
        )
    })
    .expect("fails");
    let wft = run.ms.wft.clone().expect("retried");
    assert_eq!(wft.attempt, 2);
    run.step(|t| t.start_wft(wft.scheduled_event_id, "worker", "req"))
        .expect("starts");
    let before = run.history.len();
    let req = RespondWorkflowTaskCompletedRequest {
        commands: vec![schedule_activity_with_input("big", 200)],
        identity: "worker".into(),
        ..Default::default()
    };
    let refused = run.step(|t| t.complete_wft(wft.scheduled_event_id, 2, &req));
    assert!(matches!(refused, Err(StateError::Invalid(m)) if m == TEXT));
    assert_eq!(run.history.len(), before);
    assert_eq!(run.ms.status, WorkflowExecutionStatus::Running as i32);
}

#[test]
fn an_update_message_past_the_blob_limit_terminates_the_run() {
    let mut run = Run::start();
    run.blob_limit = 100;
    let scheduled = run.ms.wft.as_ref().expect("scheduled").scheduled_event_id;
    run.step(|t| t.start_wft(scheduled, "worker", "req"))
        .expect("starts");
    let req = RespondWorkflowTaskCompletedRequest {
        messages: vec![temporalio_protos::temporal::api::protocol::v1::Message {
            id: "m".into(),
            protocol_instance_id: "u".into(),
            body: Some(prost_wkt_types::Any {
                type_url: "type.googleapis.com/temporal.api.update.v1.Response".into(),
                value: vec![0; 200],
            }),
            ..Default::default()
        }],
        identity: "worker".into(),
        ..Default::default()
    };
    let outcome = run
        .step(|t| t.complete_wft(scheduled, 1, &req))
        .expect("completes");
    assert_eq!(
        outcome,
        CompletionOutcome::Failed {
            cause: WorkflowTaskFailedCause::BadUpdateWorkflowExecutionMessage,
            message: "BadUpdateWorkflowExecutionMessage: Message type temporal.api.update.v1.Response exceeds size limit.".into(),
        }
    );
    assert_eq!(run.ms.status, WorkflowExecutionStatus::Terminated as i32);
}

fn start_timer_for(id: &str, timeout: Option<prost_wkt_types::Duration>) -> Command {
    Command {
        command_type: CommandType::StartTimer as i32,
        attributes: Some(command::Attributes::StartTimerCommandAttributes(
            StartTimerCommandAttributes {
                timer_id: id.into(),
                start_to_fire_timeout: timeout,
            },
        )),
        ..Default::default()
    }
}

#[test]
fn zero_timers_are_accepted_and_due_timers_fire_together() {
    let mut run = Run::start();
    let secs = |s: i64| {
        Some(prost_wkt_types::Duration {
            seconds: s,
            nanos: 0,
        })
    };
    // A negative timeout fails the task with the reference's words.
    let refused = run.complete(vec![start_timer_for("bad", secs(-1))]);
    assert_eq!(
        refused,
        CompletionOutcome::Failed {
            cause: WorkflowTaskFailedCause::BadStartTimerAttributes,
            message: "An invalid StartToFireTimeout is set on StartTimerCommand: negative duration. TimerId=bad".into(),
        }
    );
    // Zero, missing and later timers in one task; the later one started first.
    let outcome = run.complete(vec![
        start_timer_for("later", secs(5)),
        start_timer_for("zero", secs(0)),
        start_timer_for("unset", None),
    ]);
    assert_eq!(outcome, CompletionOutcome::Applied);
    assert_eq!(run.ms.timers.len(), 3);
    assert_eq!(run.stored.len(), 3, "each timer has its row");
    let zero = run
        .ms
        .timers
        .iter()
        .find(|t| t.timer_id == "zero")
        .expect("started")
        .started_event_id;
    // The first due timer's firing takes the other due one with it, then one task.
    let before = run.history.len();
    run.step(|t| t.user_timer_fired(zero));
    let fired: Vec<(E, String)> = run.history[before..]
        .iter()
        .map(|e| {
            let id = match &e.attributes {
                Some(history_event::Attributes::TimerFiredEventAttributes(a)) => a.timer_id.clone(),
                _ => String::new(),
            };
            (e.event_type(), id)
        })
        .collect();
    assert_eq!(
        fired,
        [
            (E::TimerFired, "zero".to_string()),
            (E::TimerFired, "unset".to_string()),
            (E::WorkflowTaskScheduled, String::new()),
        ]
    );
    let left: Vec<&str> = run.ms.timers.iter().map(|t| t.timer_id.as_str()).collect();
    assert_eq!(left, ["later"]);
    assert_eq!(run.stored.len(), 1, "the fired timers' rows go");
    run.check_ids();
}

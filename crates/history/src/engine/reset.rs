//! ResetWorkflowExecution: a new run of the same workflow id whose history is the base run's
//! up to a finished workflow task, the current run terminated, all in one place under the
//! workflow's start lock.
use kairos_core::ids::RunKey;
use kairos_persistence::Durability;
use prost::Message;
use temporalio_protos::temporal::api::enums::v1::{
    EventType, ResetReapplyExcludeType, ResetReapplyType,
};
use temporalio_protos::temporal::api::workflowservice::v1 as ws;

use super::{Engine, NextRun, TaskIdsRef, status_closed};
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use crate::state::{CurrentData, MutableState, Transition, reapply_after, rebuild, settle_timers};

/// Who terminates the run a reset replaces, as the reference writes it (with the reset's
/// reason). A run terminated so neither reports to its parent nor applies its parent close
/// policy: the new run carries on in its place.
pub(super) const RESET_IDENTITY: &str = "history-resetter";

impl Engine {
    /// Resets a workflow to the point right before the workflow task that finished with event
    /// `workflow_task_finish_event_id`; returns the new run's id.
    pub async fn reset(
        &self,
        ns: &Namespace,
        req: &ws::ResetWorkflowExecutionRequest,
    ) -> Result<String> {
        let execution = req.workflow_execution.clone().unwrap_or_default();
        let lock = self.workflow_lock(&ns.id, &execution.workflow_id);
        let _held = lock.lock().await;
        let base_key = self
            .resolve_run(ns, &execution.workflow_id, &execution.run_id)
            .await?;
        let base = self.read_state(&base_key).await?;
        let finish = req.workflow_task_finish_event_id;
        let last = base.next_event_id - 1;
        if finish <= 2 || finish > last {
            return Err(Error::Invalid(format!(
                "WorkflowTaskFinishEventId {finish} is not in the history (1 to {last})."
            )));
        }
        let events = self.read_events(&base_key, 1, last).await?;
        if events.len() as i64 != last {
            return Err(Error::NotFound(
                "the base run's history is no longer complete".into(),
            ));
        }
        let finish_type = events[(finish - 1) as usize].event_type();
        if !matches!(
            finish_type,
            EventType::WorkflowTaskCompleted
                | EventType::WorkflowTaskFailed
                | EventType::WorkflowTaskTimedOut
                | EventType::WorkflowTaskStarted
        ) {
            return Err(Error::Invalid(format!(
                "WorkflowTaskFinishEventId {finish} is a {} event, not the end of a workflow task (WorkflowTaskCompleted, WorkflowTaskFailed, WorkflowTaskTimedOut or WorkflowTaskStarted).",
                finish_type.as_str_name()
            )));
        }
        // A task's started event keeps itself in the new run, as the reference keeps it: the
        // reset point is then where the task's end would be.
        let finish = if finish_type == EventType::WorkflowTaskStarted {
            finish + 1
        } else {
            finish
        };
        let current = self
            .inner
            .store
            .get_current(&ns.id, &base_key.workflow_id)
            .await?
            .ok_or_else(|| Error::NotFound("workflow not found".into()))?;
        let current_data = CurrentData::decode(current.data.as_slice()).unwrap_or_default();
        if !req.request_id.is_empty() && current_data.start_request_id == req.request_id {
            return Ok(current.run_id);
        }
        let prefix = &events[..(finish - 1) as usize];
        // What comes back, as the reference reads the request: the legacy reapply type NONE
        // re-applies nothing, SIGNAL only signals; the exclude types take out signals or
        // updates.
        let reapply_type = ResetReapplyType::try_from(req.reset_reapply_type)
            .unwrap_or(ResetReapplyType::Unspecified);
        let excluded =
            |t: ResetReapplyExcludeType| req.reset_reapply_exclude_types.contains(&(t as i32));
        let signals =
            reapply_type != ResetReapplyType::None && !excluded(ResetReapplyExcludeType::Signal);
        let updates = !matches!(
            reapply_type,
            ResetReapplyType::None | ResetReapplyType::Signal
        ) && !excluded(ResetReapplyExcludeType::Update);
        let reapplied = reapply_after(&events[(finish - 1) as usize..], signals, updates);
        let run_id = uuid::Uuid::new_v4().to_string(); // random (version 4), as the reference makes a reset run
        let mut ms = rebuild(&ns.id, &ns.name, &base_key.workflow_id, &run_id, prefix)
            .map_err(|e| Error::Invalid(format!("cannot reset to event {finish}: {e}.")))?;
        ms.start_request_id = if req.request_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            req.request_id.clone()
        };
        let key = RunKey {
            namespace_id: ns.id.clone(),
            workflow_id: base_key.workflow_id.clone(),
            run_id: run_id.clone(),
        };
        let now = self.inner.clock.now();
        let shard_id = self.shard_of(&ns.id, &key.workflow_id);
        let shard = self.shard(shard_id)?;
        let mut ids = TaskIdsRef(&shard.ids);
        let env = self.env_for(&ms);
        let mut t = Transition::new(&mut ms, now, env, &mut ids);
        t.finish_reset(&base_key.run_id, &req.reason, reapplied);
        let Transition {
            events: new_events,
            timers,
            transfers,
            ..
        } = t;
        let timers = settle_timers(&MutableState::default(), &mut ms, timers).write;
        ms.state_transition_count = 1;
        let mut all_events = prefix.to_vec();
        all_events.extend(new_events);
        let new_run = NextRun {
            key: key.clone(),
            ms,
            events: all_events,
            timers,
            transfers,
        };
        if !status_closed(current_data.status) {
            // The current run is terminated and the new one made current in one transaction.
            // Nothing may have reached the base run since its events were read: the signals
            // to re-apply were taken from them.
            let current_key = RunKey {
                namespace_id: ns.id.clone(),
                workflow_id: base_key.workflow_id.clone(),
                run_id: current.run_id.clone(),
            };
            let base_is_current = current.run_id == base_key.run_id;
            let read_up_to = base.next_event_id;
            self.transact_then(
                &current_key,
                None,
                |t| {
                    if base_is_current && t.ms.next_event_id != read_up_to {
                        return Err(crate::state::StateError::Invalid(
                            "the workflow moved on while it was being reset; try again".into(),
                        ));
                    }
                    t.terminate(&req.reason, None, RESET_IDENTITY)
                },
                Some(new_run),
                Durability::Synced,
            )
            .await?;
            return Ok(run_id);
        }
        self.create_run(&shard, new_run, Some(current.run_id.clone()), Vec::new())
            .await?;
        Ok(run_id)
    }
}

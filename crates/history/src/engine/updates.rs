//! Updates and queries waiting for a worker's answer.
use super::*;

impl Engine {
    /// `UpdateWorkflowExecution`, first half: admits the update into the run (or finds the
    /// known one with that id).
    pub async fn admit_update(
        &self,
        key: &RunKey,
        request: temporalio_protos::temporal::api::update::v1::Request,
    ) -> Result<crate::state::UpdateInfo> {
        self.transact(key, None, |t| t.admit_update(request)).await
    }

    /// Waits until the update reaches `wanted` (completed includes rejected) or `deadline`
    /// passes, and returns it as it then is. NOT_FOUND for an unknown update, or when the run
    /// closes before the update was accepted; an accepted one then completes with the
    /// reference's AcceptedUpdateCompletedWorkflow failure.
    pub async fn wait_update(
        &self,
        key: &RunKey,
        update_id: &str,
        wanted: i32,
        deadline: tokio::time::Instant,
    ) -> Result<crate::state::UpdateInfo> {
        let mut rx = self.watch(key);
        loop {
            let ms = self.read_state(key).await?;
            let update = ms
                .updates
                .iter()
                .find(|u| u.update_id == update_id)
                .cloned()
                .ok_or_else(|| Error::NotFound(format!("update \"{update_id}\" not found")))?;
            if update.stage >= wanted {
                return Ok(update);
            }
            if ms.status == WorkflowExecutionStatus::ContinuedAsNew as i32 {
                // The workflow goes on in a new run: the caller retries there.
                return Err(Error::BusyWorkflow(
                    "workflow continued as new while the update was in flight".into(),
                ));
            }
            if status_closed(ms.status) {
                // An accepted update its run outlived ends with the reference's failure.
                return crate::state::updates::as_closed(&update)
                    .ok_or_else(|| Error::NotFound("workflow execution already completed".into()));
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Ok(update),
            }
        }
    }

    /// The poll answer carrying a query: a query-task token, the run's whole history and the
    /// query (legacy query task, brief B.4 path 1).
    pub async fn query_task(
        &self,
        key: &RunKey,
        query_id: &str,
        query: temporalio_protos::temporal::api::query::v1::WorkflowQuery,
    ) -> Result<PollWorkflowTaskAnswer> {
        let ms = self.read_state(key).await?;
        let events = self.read_events(key, 1, ms.next_event_id - 1).await?;
        let token = token::encode(&TaskTokenData {
            namespace_id: key.namespace_id.clone(),
            workflow_id: key.workflow_id.clone(),
            run_id: key.run_id.clone(),
            kind: token::QUERY_TASK,
            query_id: query_id.to_string(),
            attempt: 1,
            ..Default::default()
        });
        let response = ws::PollWorkflowTaskQueueResponse {
            task_token: token,
            workflow_execution: Some(WorkflowExecution {
                workflow_id: key.workflow_id.clone(),
                run_id: key.run_id.clone(),
            }),
            workflow_type: Some(WorkflowType {
                name: ms.workflow_type.clone(),
            }),
            previous_started_event_id: ms.last_completed_wft_started_id,
            started_event_id: 0,
            attempt: 1,
            history: Some(temporalio_protos::temporal::api::history::v1::History { events }),
            query: Some(query),
            workflow_execution_task_queue: Some(TaskQueue {
                name: ms.task_queue.clone(),
                kind: TaskQueueKind::Normal as i32,
                normal_name: String::new(),
            }),
            ..Default::default()
        };
        Ok(PollWorkflowTaskAnswer {
            response,
            events: Vec::new(),
        })
    }

    /// The query id a query-task token names.
    pub fn query_token(&self, ns: &Namespace, token_bytes: &[u8]) -> Result<String> {
        let data = token::decode(token_bytes, token::QUERY_TASK)?;
        if data.namespace_id != ns.id {
            return Err(Error::Invalid(
                "task token does not belong to this namespace".into(),
            ));
        }
        Ok(data.query_id)
    }
}

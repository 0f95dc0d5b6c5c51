//! Operations on a whole run: cancel requests, termination, deletion.
use super::*;

impl Engine {
    /// `RequestCancelWorkflowExecution`.
    pub async fn request_cancel(
        &self,
        key: &RunKey,
        reason: &str,
        identity: &str,
        request_id: &str,
    ) -> Result<()> {
        self.transact(key, None, |t| {
            t.request_cancel(reason, identity, request_id)
        })
        .await
    }

    /// `TerminateWorkflowExecution`.
    pub async fn terminate(
        &self,
        key: &RunKey,
        reason: &str,
        details: Option<temporalio_protos::temporal::api::common::v1::Payloads>,
        identity: &str,
    ) -> Result<()> {
        let lock = self.workflow_lock(&key.namespace_id, &key.workflow_id);
        let _held = lock.lock().await;
        self.transact(key, None, |t| t.terminate(reason, details, identity))
            .await
    }

    /// Deletes a run and its history (terminating it first if it runs).
    pub async fn delete(&self, key: &RunKey, timer_id: Option<TimerKey>) -> Result<()> {
        let lock = self.workflow_lock(&key.namespace_id, &key.workflow_id);
        let _held = lock.lock().await;
        let slot = self.slot(key);
        let mut guard = slot.lock().await;
        let shard_id = self.shard_of(&key.namespace_id, &key.workflow_id);
        let mut batch = self.batch_for(key, &*self.shard(shard_id)?);
        batch
            .executions
            .push((key.run_id.clone(), ExecutionWrite::Delete));
        batch.current = Some(CurrentWrite::DeleteIf {
            run_id: key.run_id.clone(),
        });
        batch.timers_delete.extend(timer_id);
        batch.visibility.push(VisibilityWrite::Delete {
            run_id: key.run_id.clone(),
        });
        self.commit_batch(batch).await?;
        *guard = None;
        drop(guard);
        self.inner.runs.lock().remove(key);
        if let Some(tx) = self.inner.watchers.lock().remove(key) {
            tx.send_replace(RunProgress {
                gone: true,
                ..RunProgress::default()
            });
        }
        Ok(())
    }
}

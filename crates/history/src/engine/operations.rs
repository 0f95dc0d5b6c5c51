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
        let guard = self.slot(key).lock_owned().await;
        let shard = self.shard(self.shard_of(&key.namespace_id, &key.workflow_id))?;
        self.apply(self.plan_delete(key, &shard, timer_id), Some(guard))
            .await?;
        Ok(())
    }

    /// This cluster's id (a UUID made the first time it is asked for, kept in the store) and
    /// the store's kind: what GetClusterInfo reports.
    pub async fn cluster(&self) -> Result<(String, &'static str)> {
        const KEY: &str = "cluster_id";
        let store = &self.inner.store;
        let id = self
            .inner
            .cluster_id
            .get_or_try_init(|| async {
                if let Some(kept) = store.get_metadata(KEY).await? {
                    return Ok::<_, Error>(String::from_utf8_lossy(&kept).into_owned());
                }
                let made = uuid::Uuid::new_v4().to_string();
                store.put_metadata(KEY, made.clone().into_bytes()).await?;
                Ok(made)
            })
            .await?;
        Ok((id.clone(), store.kind()))
    }
}

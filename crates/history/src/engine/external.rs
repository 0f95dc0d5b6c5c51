//! Signals and cancel requests from one run to another, delivered by history in the target's
//! own transaction.
use super::remote::{CancelOp, Op, RunOp, SignalOp};
use super::*;

impl Engine {
    /// Delivers a signal or cancel request one run sent to another, then records the result on
    /// the sender. The target's transaction is deduplicated by a request id naming the sender's
    /// initiated event, so a retry after a crash does not signal twice.
    pub(super) async fn deliver_external(&self, source: &RunKey, initiated: i64) -> Delivery {
        let request = match self.read_state(source).await {
            Ok(ms) => ms
                .external_requests
                .iter()
                .find(|r| r.initiated_event_id == initiated)
                .cloned(),
            Err(Error::NotFound(_)) => return Delivery::DropTask,
            Err(e) => {
                tracing::warn!(run = %source, error = %e, "failed to read a run sending a signal or cancel; retrying");
                return Delivery::Retry;
            }
        };
        let Some(request) = request else {
            return Delivery::Done; // already recorded
        };
        let request_id = format!("{}:{}", source.run_id, initiated);
        let sender = WorkflowExecution {
            workflow_id: source.workflow_id.clone(),
            run_id: source.run_id.clone(),
        };
        let mut limit_reached = false;
        let delivered = match self.inner.namespaces.get(&request.namespace) {
            Err(_) => false,
            Ok(ns) => match self
                .resolve_run(&ns, &request.workflow_id, &request.run_id)
                .await
            {
                Err(Error::NotFound(_)) => false,
                Err(e) => {
                    tracing::warn!(run = %source, error = %e, "failed to find the target of a signal or cancel; retrying");
                    return Delivery::Retry;
                }
                Ok(target) => {
                    let op = if request.cancel {
                        Op::Cancel(CancelOp {
                            reason: request.reason.clone(),
                            identity: "history-service".into(),
                            request_id: request_id.clone(),
                            sender: Some(sender.clone()),
                            initiated,
                        })
                    } else {
                        Op::Signal(SignalOp {
                            name: request.signal_name.clone(),
                            input: request.input.clone(),
                            header: request.header.clone(),
                            identity: "history-service".into(),
                            request_id: request_id.clone(),
                            sender: Some(sender.clone()),
                        })
                    };
                    let result = self.run_op(RunOp::on(&target, op)).await.map(|_| ());
                    match result {
                        Ok(()) => true,
                        Err(Error::NotFound(_)) => false,
                        Err(Error::Invalid(_)) if !request.cancel => {
                            limit_reached = true;
                            false
                        }
                        Err(e) => {
                            tracing::warn!(run = %source, error = %e, "failed to deliver a signal or cancel; retrying");
                            return Delivery::Retry;
                        }
                    }
                }
            },
        };
        match self
            .transact(source, None, |t| {
                t.external_request_done(initiated, delivered, limit_reached)
            })
            .await
        {
            Ok(()) | Err(Error::NotFound(_)) => Delivery::Done,
            Err(e) => {
                tracing::warn!(run = %source, error = %e, "failed to record a delivered signal or cancel; retrying");
                Delivery::Retry
            }
        }
    }
}

/// How one attempt to deliver a signal or cancel request to another workflow ended.
pub(super) enum Delivery {
    /// Delivered (or found already recorded) and the result written on the sender, whose
    /// transaction deleted the task row.
    Done,
    /// Nothing (more) to do and no transaction of the run deletes the row: it is dropped here
    /// (the sender run is gone, or the task records nothing on it).
    DropTask,
    /// A transient failure: try again after a pause.
    Retry,
}

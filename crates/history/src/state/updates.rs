//! Workflow updates (brief B.5), delivered on normal workflow tasks: a request is admitted into
//! the mutable state, carried to the worker as a protocol message on the next workflow task, and
//! the worker's acceptance, rejection and response become events (rejections none).
use prost::Message as _;
use temporalio_protos::temporal::api::enums::v1::{
    EventType, UpdateWorkflowExecutionLifecycleStage as Stage,
};
use temporalio_protos::temporal::api::failure::v1::{ApplicationFailureInfo, Failure, failure};
use temporalio_protos::temporal::api::history::v1 as hist;
use temporalio_protos::temporal::api::protocol::v1::{Message, message};
use temporalio_protos::temporal::api::update::v1::{
    Acceptance, Outcome, Rejection, Request, Response, outcome,
};

use super::{StateError, Transition, UpdateInfo, closed, event};

const TYPE_PREFIX: &str = "type.googleapis.com/";
/// Updates a run remembers (finished ones are dropped first past it).
const MAX_REMEMBERED_UPDATES: usize = 1000;
const REQUEST_TYPE: &str = "temporal.api.update.v1.Request";

impl Transition<'_> {
    /// Admits an update: recorded in the run and, unless a workflow task is already pending, a
    /// workflow task is scheduled to carry it. A known id returns the existing entry (a
    /// completed one with its outcome); a rejected one may be sent again.
    pub fn admit_update(&mut self, request: Request) -> Result<UpdateInfo, StateError> {
        let update_id = request
            .meta
            .as_ref()
            .map(|m| m.update_id.clone())
            .unwrap_or_default();
        if closed(self.ms.status) {
            // A known update is answered as it ended; any other is refused.
            return self
                .update_index(&update_id)
                .and_then(|pos| as_closed(&self.ms.updates[pos]))
                .ok_or_else(|| {
                    StateError::NotFound("workflow execution already completed".into())
                });
        }
        if let Some(pos) = self.update_index(&update_id) {
            if !self.ms.updates[pos].rejected {
                return Ok(self.ms.updates[pos].clone());
            }
            self.ms.updates.remove(pos);
        }
        let info = UpdateInfo {
            update_id,
            request: Some(request),
            stage: Stage::Admitted as i32,
            ..Default::default()
        };
        self.ms.updates.push(info.clone());
        // Finished updates are kept to answer a retried request; the oldest go past a bound so
        // a long-lived run's state does not grow with every update it ever had.
        while self.ms.updates.len() > MAX_REMEMBERED_UPDATES {
            let Some(oldest) = self
                .ms
                .updates
                .iter()
                .position(|u| u.stage == Stage::Completed as i32)
            else {
                break;
            };
            self.ms.updates.remove(oldest);
        }
        if self.ms.wft.is_none() {
            self.schedule_wft();
        }
        Ok(info)
    }

    /// Re-applies an update a reset found after its reset point: a WorkflowExecutionUpdateAdmitted
    /// event with its request (`origin` REAPPLY when the old run had accepted it), which the
    /// next workflow task delivers. An id the run already has is skipped.
    pub fn reapply_update(
        &mut self,
        request: temporalio_protos::temporal::api::update::v1::Request,
        origin: temporalio_protos::temporal::api::enums::v1::UpdateAdmittedEventOrigin,
    ) {
        let update_id = request
            .meta
            .as_ref()
            .map(|m| m.update_id.clone())
            .unwrap_or_default();
        if self.update_index(&update_id).is_some() {
            return;
        }
        let id = self.append(event(
            EventType::WorkflowExecutionUpdateAdmitted,
            hist::WorkflowExecutionUpdateAdmittedEventAttributes {
                request: Some(request.clone()),
                origin: origin as i32,
            },
        ));
        self.ms.updates.push(UpdateInfo {
            update_id,
            request: Some(request),
            stage: Stage::Admitted as i32,
            admitted_event_id: id,
            ..Default::default()
        });
    }

    /// The protocol messages a starting workflow task carries: every admitted update not yet
    /// accepted or rejected (again, if an earlier task carrying it failed).
    pub fn update_messages(
        &mut self,
        scheduled_event_id: i64,
        started_event_id: i64,
    ) -> Vec<Message> {
        let mut messages = Vec::new();
        for u in self.ms.updates.iter_mut() {
            if u.rejected || u.stage != Stage::Admitted as i32 {
                continue;
            }
            u.delivered_in_wft = scheduled_event_id;
            if u.admitted_event_id > 0 {
                continue; // in the task's history already
            }
            let body = u.request.clone().unwrap_or_default().encode_to_vec();
            messages.push(Message {
                id: format!("{}/request", u.update_id),
                protocol_instance_id: u.update_id.clone(),
                sequencing_id: Some(message::SequencingId::EventId(started_event_id - 1)),
                body: Some(prost_wkt_types::Any {
                    type_url: format!("{TYPE_PREFIX}{REQUEST_TYPE}"),
                    value: body,
                }),
            });
        }
        messages
    }

    /// Applies one message of a workflow task completion: acceptance and response write their
    /// events (where a ProtocolMessage command put them), a rejection writes nothing.
    pub(super) fn apply_update_message(&mut self, msg: &Message) {
        let Some(pos) = self.update_index(&msg.protocol_instance_id) else {
            return;
        };
        let Some(body) = &msg.body else { return };
        let kind = body.type_url.rsplit('/').next().unwrap_or_default();
        match kind {
            "temporal.api.update.v1.Acceptance" => {
                let Ok(acc) = Acceptance::decode(body.value.as_slice()) else {
                    return;
                };
                if self.ms.updates[pos].stage != Stage::Admitted as i32 {
                    return;
                }
                // An update admitted by an event has its request there already.
                let stored = (self.ms.updates[pos].admitted_event_id == 0)
                    .then(|| {
                        acc.accepted_request
                            .or(self.ms.updates[pos].request.clone())
                    })
                    .flatten();
                let id = self.append(event(
                    EventType::WorkflowExecutionUpdateAccepted,
                    hist::WorkflowExecutionUpdateAcceptedEventAttributes {
                        protocol_instance_id: msg.protocol_instance_id.clone(),
                        accepted_request_message_id: acc.accepted_request_message_id,
                        accepted_request_sequencing_event_id: acc
                            .accepted_request_sequencing_event_id,
                        accepted_request: stored,
                    },
                ));
                let u = &mut self.ms.updates[pos];
                u.stage = Stage::Accepted as i32;
                u.accepted_event_id = id;
            }
            "temporal.api.update.v1.Rejection" => {
                let Ok(rej) = Rejection::decode(body.value.as_slice()) else {
                    return;
                };
                let u = &mut self.ms.updates[pos];
                if u.stage == Stage::Admitted as i32 {
                    u.rejected = true;
                    u.stage = Stage::Completed as i32;
                    u.outcome = Some(Outcome {
                        value: Some(outcome::Value::Failure(rej.failure.unwrap_or_default())),
                    });
                }
            }
            "temporal.api.update.v1.Response" => {
                let Ok(resp) = Response::decode(body.value.as_slice()) else {
                    return;
                };
                let accepted_event_id = self.ms.updates[pos].accepted_event_id;
                if self.ms.updates[pos].stage != Stage::Accepted as i32 {
                    return;
                }
                self.append(event(
                    EventType::WorkflowExecutionUpdateCompleted,
                    hist::WorkflowExecutionUpdateCompletedEventAttributes {
                        meta: resp.meta,
                        accepted_event_id,
                        outcome: resp.outcome.clone(),
                    },
                ));
                let u = &mut self.ms.updates[pos];
                u.stage = Stage::Completed as i32;
                u.outcome = resp.outcome;
            }
            _ => {}
        }
    }

    /// After a completion: updates the task carried but the worker neither accepted nor
    /// rejected are rejected for it; returns whether updates admitted meanwhile still need a
    /// workflow task.
    pub(super) fn settle_updates(&mut self, scheduled_event_id: i64) -> bool {
        let mut waiting = false;
        for u in self.ms.updates.iter_mut() {
            if u.rejected || u.stage != Stage::Admitted as i32 {
                continue;
            }
            if u.delivered_in_wft == scheduled_event_id {
                u.rejected = true;
                u.stage = Stage::Completed as i32;
                u.outcome = Some(Outcome {
                    value: Some(outcome::Value::Failure(unprocessed_update())),
                });
            } else {
                waiting = true;
            }
        }
        waiting
    }

    fn update_index(&self, update_id: &str) -> Option<usize> {
        self.ms
            .updates
            .iter()
            .position(|u| u.update_id == update_id)
    }
}

/// What an update of a closed run answers: its outcome if it completed, the reference's
/// failure if it was accepted and its run closed before it completed, nothing (not found)
/// otherwise.
pub fn as_closed(update: &UpdateInfo) -> Option<UpdateInfo> {
    if update.rejected {
        return None;
    }
    if update.stage == Stage::Completed as i32 {
        return Some(update.clone());
    }
    if update.stage != Stage::Accepted as i32 {
        return None;
    }
    let mut outlived = update.clone();
    outlived.stage = Stage::Completed as i32;
    outlived.outcome = Some(Outcome {
        value: Some(outcome::Value::Failure(server_failure(
            "Workflow Update failed because the Workflow completed before the Update completed.",
            "AcceptedUpdateCompletedWorkflow",
        ))),
    });
    Some(outlived)
}

fn unprocessed_update() -> Failure {
    server_failure(
        "Workflow Update is rejected because it wasn't processed by worker. Probably, Workflow Update is not supported by the worker.",
        "UnprocessedUpdate",
    )
}

/// A non-retryable application failure the server itself gives an update, as the reference
/// words it.
fn server_failure(message: &str, failure_type: &str) -> Failure {
    Failure {
        message: message.into(),
        source: "Server".into(),
        failure_info: Some(failure::FailureInfo::ApplicationFailureInfo(
            ApplicationFailureInfo {
                r#type: failure_type.into(),
                non_retryable: true,
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

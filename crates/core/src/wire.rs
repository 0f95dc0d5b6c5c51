//! Answers encoded partly by hand. A workflow task answer carries history events the run cache
//! already holds encoded; decoding them into messages only for tonic to encode them again cost
//! about 2.5 % of server CPU (K=3 C=200 profile), so the answer keeps them as bytes and writes
//! them straight into the `history` field. The generated WorkflowService uses this type for
//! PollWorkflowTaskQueue (an `extern_path` in `kairos-proto`'s build script); on the wire it is
//! the same message.
use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};
use temporalio_protos::temporal::api::history::v1::{History, HistoryEvent};
use temporalio_protos::temporal::api::workflowservice::v1::PollWorkflowTaskQueueResponse;

/// `PollWorkflowTaskQueueResponse.history`.
const HISTORY_TAG: u32 = 8;
/// `History.events`.
const EVENTS_TAG: u32 = 1;

/// A `PollWorkflowTaskQueueResponse` whose history may be held as encoded events.
///
/// Encoding writes `response` and then, if `response.history` is `None`, a `history` field made
/// of `events` as they are. Decoding (a client reading an answer) fills `response` alone,
/// history included.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PollWorkflowTaskAnswer {
    /// Every field but the encoded events.
    pub response: PollWorkflowTaskQueueResponse,
    /// Encoded `HistoryEvent`s, in order; used only while `response.history` is `None`.
    pub events: Vec<Vec<u8>>,
}

impl PollWorkflowTaskAnswer {
    /// The plain message, with the encoded events decoded into its history (for tests and
    /// in-process callers that read the answer).
    pub fn into_response(self) -> Result<PollWorkflowTaskQueueResponse, DecodeError> {
        let mut response = self.response;
        if response.history.is_none() && !self.events.is_empty() {
            let events = self
                .events
                .iter()
                .map(|bytes| HistoryEvent::decode(bytes.as_slice()))
                .collect::<Result<Vec<_>, _>>()?;
            response.history = Some(History { events });
        }
        Ok(response)
    }

    fn raw_history(&self) -> bool {
        self.response.history.is_none() && !self.events.is_empty()
    }

    /// Length of the `History` message made of `events`.
    fn history_len(&self) -> usize {
        self.events
            .iter()
            .map(|e| {
                encoding::key_len(EVENTS_TAG)
                    + encoding::encoded_len_varint(e.len() as u64)
                    + e.len()
            })
            .sum()
    }
}

impl Message for PollWorkflowTaskAnswer {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.response.encode_raw(buf);
        if self.raw_history() {
            encoding::encode_key(HISTORY_TAG, WireType::LengthDelimited, buf);
            encoding::encode_varint(self.history_len() as u64, buf);
            for event in &self.events {
                encoding::encode_key(EVENTS_TAG, WireType::LengthDelimited, buf);
                encoding::encode_varint(event.len() as u64, buf);
                buf.put_slice(event);
            }
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        self.response.merge_field(tag, wire_type, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        let mut len = self.response.encoded_len();
        if self.raw_history() {
            let history = self.history_len();
            len += encoding::key_len(HISTORY_TAG)
                + encoding::encoded_len_varint(history as u64)
                + history;
        }
        len
    }

    fn clear(&mut self) {
        self.response.clear();
        self.events.clear();
    }
}

#[cfg(test)]
mod tests {
    use temporalio_protos::temporal::api::common::v1::WorkflowExecution;

    use super::*;

    fn event(id: i64) -> HistoryEvent {
        HistoryEvent {
            event_id: id,
            event_type: 5,
            ..Default::default()
        }
    }

    #[test]
    fn encodes_as_the_plain_message_with_that_history() {
        let response = PollWorkflowTaskQueueResponse {
            task_token: vec![1, 2, 3],
            workflow_execution: Some(WorkflowExecution {
                workflow_id: "order-1".into(),
                run_id: "r".into(),
            }),
            started_event_id: 3,
            attempt: 1,
            ..Default::default()
        };
        let events: Vec<HistoryEvent> = (1..=3).map(event).collect();
        let answer = PollWorkflowTaskAnswer {
            response: response.clone(),
            events: events.iter().map(Message::encode_to_vec).collect(),
        };
        let bytes = answer.encode_to_vec();
        assert_eq!(bytes.len(), answer.encoded_len());
        let expected = PollWorkflowTaskQueueResponse {
            history: Some(History {
                events: events.clone(),
            }),
            ..response
        };
        assert_eq!(
            PollWorkflowTaskQueueResponse::decode(bytes.as_slice()).unwrap(),
            expected
        );
        // Read back through this type, the history lands in the response.
        let read = PollWorkflowTaskAnswer::decode(bytes.as_slice()).unwrap();
        assert_eq!(read.response, expected);
        assert!(read.events.is_empty());
        assert_eq!(answer.into_response().unwrap(), expected);
    }

    #[test]
    fn a_decoded_history_is_not_written_twice() {
        let response = PollWorkflowTaskQueueResponse {
            history: Some(History {
                events: vec![event(1)],
            }),
            ..Default::default()
        };
        let answer = PollWorkflowTaskAnswer {
            response: response.clone(),
            events: vec![event(2).encode_to_vec()],
        };
        let read =
            PollWorkflowTaskQueueResponse::decode(answer.encode_to_vec().as_slice()).unwrap();
        assert_eq!(read, response);
        assert_eq!(PollWorkflowTaskAnswer::default().encoded_len(), 0);
    }
}

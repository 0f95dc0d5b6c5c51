//! The whole request surface with hostile values: every RPC of WorkflowService and
//! OperatorService gets requests built by reflection from the API's descriptors, with durations
//! and timestamps up to `i64::MAX` seconds, negative and out-of-range nanoseconds, NaN and
//! infinite doubles, unknown enum numbers, empty and over-long strings, and now and then the
//! ids and task tokens of live runs so the requests reach past validation. No request may
//! panic the server (a panic answers INTERNAL and is counted), and afterwards the live runs'
//! queues still serve. Seeded: the seed is printed, and `KAIROS_SURFACE_SEED=N` replays it.
use std::collections::HashMap;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use futures::StreamExt;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value,
};
use temporalio_common::protos::temporal::api::command::v1::{
    Command, ScheduleActivityTaskCommandAttributes, command,
};
use temporalio_common::protos::temporal::api::common::v1::{ActivityType, WorkflowType};
use temporalio_common::protos::temporal::api::enums::v1::CommandType;
use temporalio_common::protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_common::protos::temporal::api::workflowservice::v1::{
    PollActivityTaskQueueRequest, PollWorkflowTaskQueueRequest,
    RespondWorkflowTaskCompletedRequest, StartWorkflowExecutionRequest,
};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use kairos_testing::TestServer;

use crate::support::{connect, unique};

/// Requests sent to each RPC the server has (the others answer UNIMPLEMENTED to an empty
/// request and are skipped).
const PER_METHOD: u64 = 40;

/// Raw protobuf bytes in and out: the requests are encoded by reflection.
#[derive(Default, Clone)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// xorshift64*: small, seedable, good enough to pick values.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize].clone()
    }
}

/// Seconds of durations and timestamps: mostly valid and extreme, sometimes negative.
const SECONDS: &[i64] = &[
    1,
    3,
    315_576_000_000,
    315_576_000_001,
    50_000_000_000_000_000,
    i64::MAX,
    i64::MAX,
    253_402_300_799,
    253_402_300_800,
    0,
    -1,
    i64::MIN,
];
const NANOS: &[i32] = &[0, 0, 0, 1, 999_999_999, 1_000_000_000, i32::MAX, -1];
const INTS: &[i64] = &[0, 1, -1, 2, 1000, i32::MAX as i64, i64::MAX, i64::MIN];
const DOUBLES: &[f64] = &[
    0.0,
    1.0,
    2.0,
    -1.0,
    0.5,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    1e308,
];
const GENTLE_INTS: &[i64] = &[0, 1, 2, 1000, i32::MAX as i64, i64::MAX];
const GENTLE_DOUBLES: &[f64] = &[0.0, 1.0, 2.0, f64::INFINITY, 1e308];
const QUERIES: &[&str] = &[
    "",
    "WorkflowId = 'x'",
    "ExecutionStatus = 'Running' ORDER BY StartTime",
    "StartTime > '9999-12-31T23:59:59Z'",
    "StartTime < 99999999999999999999",
    "ExecutionDuration > '99999999999h'",
    "CustomIntField = 9223372036854775807",
    "((((",
    "WorkflowId IN ()",
    "GROUP BY ExecutionStatus",
];

/// What the generator may use to reach past validation: names and tokens of live runs.
struct Live {
    workflow_ids: Vec<String>,
    run_ids: Vec<String>,
    task_queues: Vec<String>,
    tokens: Vec<Vec<u8>>,
}

struct Gen<'a> {
    rng: Rng,
    live: &'a Live,
    /// Gentle requests keep every name valid and every duration non-negative, so they get past
    /// validation and carry their extreme values deep into the server; the others are hostile
    /// throughout.
    gentle: bool,
}

impl Gen<'_> {
    fn string(&mut self, field: &FieldDescriptor) -> String {
        let name = field.name();
        let long = "x".repeat(1200);
        match name {
            "namespace" if self.gentle || self.rng.chance(90) => "default".into(),
            "workflow_id" if self.rng.chance(60) => self.rng.pick(&self.live.workflow_ids),
            "run_id" | "first_execution_run_id" if self.rng.chance(50) => {
                self.rng.pick(&self.live.run_ids)
            }
            "name" | "task_queue" if self.rng.chance(40) => self.rng.pick(&self.live.task_queues),
            "query" => self.rng.pick(QUERIES).to_string(),
            "cron_schedule" if self.gentle => String::new(),
            "cron_schedule" => self
                .rng
                .pick(&["", "* * * * *", "@every 0s", "61 25 * * *"])
                .into(),
            // Mostly a valid name, so the request gets past validation to the values that
            // matter; sometimes empty, too long or odd.
            _ if self.gentle || self.rng.chance(70) => uuid_like(self.rng.next()),
            _ => self
                .rng
                .pick(&[String::new(), long, "\u{1F355}\u{0}\u{FFFF}".into()]),
        }
    }

    fn bytes(&mut self, field: &FieldDescriptor) -> Bytes {
        if field.name().contains("token") && self.rng.chance(60) {
            return Bytes::from(self.rng.pick(&self.live.tokens));
        }
        let len = self.rng.pick(&[0usize, 1, 16, 300]);
        Bytes::from((0..len).map(|_| self.rng.next() as u8).collect::<Vec<_>>())
    }

    fn scalar(&mut self, field: &FieldDescriptor, kind: &Kind) -> Option<Value> {
        let (ints, doubles) = if self.gentle {
            (GENTLE_INTS, GENTLE_DOUBLES)
        } else {
            (INTS, DOUBLES)
        };
        Some(match kind {
            Kind::Double => Value::F64(self.rng.pick(doubles)),
            Kind::Float => Value::F32(self.rng.pick(doubles) as f32),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(self.rng.pick(ints)),
            Kind::Uint64 | Kind::Fixed64 => Value::U64(self.rng.pick(ints) as u64),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(self.rng.pick(ints) as i32),
            Kind::Uint32 | Kind::Fixed32 => Value::U32(self.rng.pick(INTS) as u32),
            Kind::Bool => Value::Bool(self.rng.chance(50)),
            Kind::String => Value::String(self.string(field)),
            Kind::Bytes => Value::Bytes(self.bytes(field)),
            Kind::Enum(e) => {
                let numbers: Vec<i32> = e.values().map(|v| v.number()).collect();
                Value::EnumNumber(if self.rng.chance(90) {
                    self.rng.pick(&numbers)
                } else {
                    999
                })
            }
            Kind::Message(m) => Value::Message(self.message(m, 1)?),
        })
    }

    fn message(&mut self, desc: &MessageDescriptor, depth: u32) -> Option<DynamicMessage> {
        let mut msg = DynamicMessage::new(desc.clone());
        match desc.full_name() {
            "google.protobuf.Duration" | "google.protobuf.Timestamp" => {
                let mut seconds = self.rng.pick(SECONDS);
                let mut nanos = self.rng.pick(NANOS);
                if self.gentle {
                    seconds = seconds.max(0);
                    nanos = nanos.max(0);
                }
                msg.set_field_by_name("seconds", Value::I64(seconds));
                msg.set_field_by_name("nanos", Value::I32(nanos));
                return Some(msg);
            }
            // Free-form JSON-like values: nothing the server interprets.
            "google.protobuf.Struct" | "google.protobuf.Value" | "google.protobuf.ListValue" => {
                return Some(msg);
            }
            _ => {}
        }
        if depth > 4 {
            return None;
        }
        // Near the top, nearly every field is set (required ones among them, so requests get
        // past validation); deeper, fewer, so messages stay small.
        let set_percent = match depth {
            0 | 1 if self.gentle => 100,
            0 => 95,
            1 => 85,
            _ => 40,
        };
        // One member of each oneof, picked at random.
        let chosen: std::collections::HashSet<String> = desc
            .oneofs()
            .filter(|o| !o.is_synthetic())
            .filter_map(|o| {
                let members: Vec<String> = o.fields().map(|f| f.name().to_string()).collect();
                (!members.is_empty()).then(|| self.rng.pick(&members))
            })
            .collect();
        for field in desc.fields() {
            if let Some(oneof) = field.containing_oneof()
                && !oneof.is_synthetic()
                && !chosen.contains(field.name())
            {
                continue;
            }
            if !self.rng.chance(set_percent) {
                continue;
            }
            let kind = field.kind();
            let value = if field.is_map() && self.gentle {
                // Maps name things (search attributes, headers) a gentle request would have to
                // have registered first.
                continue;
            } else if field.is_map() {
                let Kind::Message(entry) = &kind else {
                    continue;
                };
                let key_field = entry.map_entry_key_field();
                let value_field = entry.map_entry_value_field();
                let mut map = HashMap::new();
                for _ in 0..self.rng.below(3) {
                    let key = match self.scalar(&key_field, &key_field.kind()) {
                        Some(Value::String(s)) => MapKey::String(s),
                        Some(Value::I32(n)) => MapKey::I32(n),
                        Some(Value::I64(n)) => MapKey::I64(n),
                        Some(Value::Bool(b)) => MapKey::Bool(b),
                        _ => continue,
                    };
                    let value = match value_field.kind() {
                        Kind::Message(m) => self.message(&m, depth + 1).map(Value::Message),
                        k => self.scalar(&value_field, &k),
                    };
                    if let Some(value) = value {
                        map.insert(key, value);
                    }
                }
                Value::Map(map)
            } else if field.is_list() {
                let mut items = Vec::new();
                for _ in 0..self.rng.below(3) {
                    let item = match &kind {
                        Kind::Message(m) => self.message(m, depth + 1).map(Value::Message),
                        k => self.scalar(&field, k),
                    };
                    items.extend(item);
                }
                Value::List(items)
            } else {
                let value = match &kind {
                    Kind::Message(m) => self.message(m, depth + 1).map(Value::Message),
                    k => self.scalar(&field, k),
                };
                let Some(value) = value else { continue };
                value
            };
            msg.set_field(&field, value);
        }
        Some(msg)
    }
}

fn uuid_like(n: u64) -> String {
    format!("{n:016x}-0000-7000-8000-{:012x}", n >> 16)
}

/// Makes live state: a run whose workflow task is started (its token unanswered), and a run
/// whose activity is started (its token unanswered).
async fn live_runs(server: &TestServer) -> anyhow::Result<Live> {
    let client = connect(server).await?;
    let mut svc = client.connection().workflow_service();
    let mut live = Live {
        workflow_ids: Vec::new(),
        run_ids: Vec::new(),
        task_queues: Vec::new(),
        tokens: Vec::new(),
    };
    for with_activity in [false, true] {
        let workflow_id = unique("surface");
        let task_queue = unique("surface-tq");
        let queue = Some(TaskQueue {
            name: task_queue.clone(),
            ..Default::default()
        });
        let started = svc
            .start_workflow_execution(tonic::Request::new(StartWorkflowExecutionRequest {
                namespace: "default".into(),
                workflow_id: workflow_id.clone(),
                workflow_type: Some(WorkflowType {
                    name: "Surface".into(),
                }),
                task_queue: queue.clone(),
                request_id: unique("req"),
                ..Default::default()
            }))
            .await?
            .into_inner();
        let task = svc
            .poll_workflow_task_queue(tonic::Request::new(PollWorkflowTaskQueueRequest {
                namespace: "default".into(),
                task_queue: queue.clone(),
                identity: "surface".into(),
                ..Default::default()
            }))
            .await?
            .into_inner();
        anyhow::ensure!(!task.task_token.is_empty(), "no workflow task");
        if with_activity {
            let schedule = Command {
                command_type: CommandType::ScheduleActivityTask as i32,
                attributes: Some(command::Attributes::ScheduleActivityTaskCommandAttributes(
                    ScheduleActivityTaskCommandAttributes {
                        activity_id: "a".into(),
                        activity_type: Some(ActivityType { name: "A".into() }),
                        task_queue: queue.clone(),
                        start_to_close_timeout: Some(prost_wkt_types::Duration {
                            seconds: 600,
                            nanos: 0,
                        }),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            };
            svc.respond_workflow_task_completed(tonic::Request::new(
                RespondWorkflowTaskCompletedRequest {
                    namespace: "default".into(),
                    task_token: task.task_token,
                    commands: vec![schedule],
                    ..Default::default()
                },
            ))
            .await?;
            let activity = svc
                .poll_activity_task_queue(tonic::Request::new(PollActivityTaskQueueRequest {
                    namespace: "default".into(),
                    task_queue: queue,
                    identity: "surface".into(),
                    ..Default::default()
                }))
                .await?
                .into_inner();
            anyhow::ensure!(!activity.task_token.is_empty(), "no activity task");
            live.tokens.push(activity.task_token);
        } else {
            live.tokens.push(task.task_token);
        }
        live.workflow_ids.push(workflow_id);
        live.run_ids.push(started.run_id);
        live.task_queues.push(task_queue);
    }
    Ok(live)
}

/// Sends one raw request with a 3 s deadline; the status it got.
async fn send(
    channel: &tonic::transport::Channel,
    path: String,
    body: Vec<u8>,
) -> (tonic::Code, String) {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    let mut request = tonic::Request::new(body);
    request.set_timeout(Duration::from_secs(3));
    let outcome = match grpc.ready().await {
        Ok(()) => grpc
            .unary(request, path.parse().expect("a valid path"), RawCodec)
            .await
            .map(|_| ()),
        Err(e) => Err(tonic::Status::unavailable(e.to_string())),
    };
    match outcome {
        Ok(()) => (tonic::Code::Ok, String::new()),
        Err(status) => (status.code(), status.message().to_string()),
    }
}

#[tokio::test]
async fn no_request_with_extreme_values_panics_the_server() -> anyhow::Result<()> {
    let seed: u64 = std::env::var("KAIROS_SURFACE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    println!("request surface seed: {seed} (replay with KAIROS_SURFACE_SEED={seed})");
    let server = TestServer::builder()
        .long_poll_timeout(Duration::from_millis(300))
        .start()
        .await?;
    let live = live_runs(&server).await?;
    let pool = DescriptorPool::decode(kairos_proto::DESCRIPTOR_SET)?;
    let channel = tonic::transport::Endpoint::from_shared(server.url())?
        .connect()
        .await?;
    let mut calls = Vec::new();
    let mut rng = Rng(seed);
    for service_name in [
        "temporal.api.workflowservice.v1.WorkflowService",
        "temporal.api.operatorservice.v1.OperatorService",
    ] {
        let service = pool
            .get_service_by_name(service_name)
            .ok_or_else(|| anyhow::anyhow!("{service_name} not in the descriptors"))?;
        for method in service.methods() {
            let path = format!("/{service_name}/{}", method.name());
            if send(&channel, path.clone(), Vec::new()).await.0 == tonic::Code::Unimplemented {
                continue;
            }
            for _ in 0..PER_METHOD {
                let mut generator = Gen {
                    rng: Rng(rng.next() | 1),
                    live: &live,
                    gentle: rng.chance(50),
                };
                let request = generator
                    .message(&method.input(), 0)
                    .expect("a top-level request is always built");
                calls.push((path.clone(), prost::Message::encode_to_vec(&request)));
            }
        }
    }
    let sent = calls.len();
    let outcomes: Vec<(String, tonic::Code, String)> = futures::stream::iter(calls)
        .map(|(path, body)| {
            let channel = channel.clone();
            async move {
                let (code, message) = send(&channel, path.clone(), body).await;
                (path, code, message)
            }
        })
        .buffer_unordered(24)
        .collect()
        .await;
    assert_eq!(outcomes.len(), sent);
    let mut codes: std::collections::BTreeMap<String, usize> = Default::default();
    for (_, code, _) in &outcomes {
        *codes.entry(format!("{code:?}")).or_default() += 1;
    }
    println!("{sent} requests answered: {codes:?}");
    if std::env::var_os("KAIROS_SURFACE_VERBOSE").is_some() {
        let mut by_method: std::collections::BTreeMap<(String, String), usize> = Default::default();
        for (path, code, message) in &outcomes {
            let short: String = message.chars().take(60).collect();
            *by_method
                .entry((
                    path.rsplit('/').next().unwrap_or_default().to_string(),
                    format!("{code:?} {short}"),
                ))
                .or_default() += 1;
        }
        for ((method, outcome), n) in by_method {
            println!("  {method}: {outcome} x{n}");
        }
    }
    let broken: Vec<_> = outcomes
        .iter()
        // The client's own deadline (a query no worker answers) is not the server failing.
        .filter(|(_, code, message)| {
            *code != tonic::Code::Cancelled || message != "Timeout expired"
        })
        .filter(|(_, code, _)| {
            matches!(
                code,
                tonic::Code::Internal
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
                    | tonic::Code::DataLoss
                    | tonic::Code::Unavailable
            )
        })
        .collect();
    assert!(
        broken.is_empty(),
        "seed {seed}: {} of {sent} requests failed inside the server, e.g. {:?}",
        broken.len(),
        &broken[..broken.len().min(5)]
    );
    assert_eq!(server.handler_panics(), 0, "seed {seed}: handlers panicked");
    // The live runs' queues still serve (a poisoned queue answered every poll with an error).
    let client = connect(&server).await?;
    let mut svc = client.connection().workflow_service();
    for task_queue in &live.task_queues {
        let mut poll = tonic::Request::new(PollActivityTaskQueueRequest {
            namespace: "default".into(),
            task_queue: Some(TaskQueue {
                name: task_queue.clone(),
                ..Default::default()
            }),
            identity: "surface".into(),
            ..Default::default()
        });
        poll.set_timeout(Duration::from_secs(3));
        svc.poll_activity_task_queue(poll).await?;
    }
    server.shutdown().await
}

/// A request that arrives with no time left (`grpc-timeout` of zero) is answered
/// DEADLINE_EXCEEDED and not executed: the workflow it would have started does not exist.
#[tokio::test]
async fn a_request_whose_deadline_has_passed_is_not_executed() -> anyhow::Result<()> {
    use temporalio_common::protos::temporal::api::common::v1::WorkflowExecution;
    use temporalio_common::protos::temporal::api::workflowservice::v1::DescribeWorkflowExecutionRequest;

    let server = TestServer::builder().start().await?;
    let channel = tonic::transport::Endpoint::from_shared(server.url())?
        .connect()
        .await?;
    let workflow_id = unique("expired");
    let start = StartWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_id: workflow_id.clone(),
        workflow_type: Some(WorkflowType { name: "w".into() }),
        task_queue: Some(TaskQueue {
            name: unique("tq"),
            ..Default::default()
        }),
        request_id: unique("request"),
        ..Default::default()
    };
    let call = |body: Vec<u8>, path: &'static str, timeout: Option<&'static str>| {
        let channel = channel.clone();
        async move {
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.expect("the channel is ready");
            let mut request = tonic::Request::new(body);
            if let Some(t) = timeout {
                request
                    .metadata_mut()
                    .insert("grpc-timeout", t.parse().expect("a metadata value"));
            }
            grpc.unary(request, path.parse().expect("a valid path"), RawCodec)
                .await
                .map(|_| ())
        }
    };
    let start_path = "/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution";
    for expired in ["0m", "0n", "00S"] {
        let refused = call(
            prost::Message::encode_to_vec(&start),
            start_path,
            Some(expired),
        )
        .await
        .expect_err("refused");
        // The server answers DEADLINE_EXCEEDED (frontend `deadline` unit test); tonic's client
        // enforces the header too and may give up first, as "Timeout expired".
        let by_server = refused.code() == tonic::Code::DeadlineExceeded;
        let by_client =
            refused.code() == tonic::Code::Cancelled && refused.message() == "Timeout expired";
        assert!(by_server || by_client, "{expired}: {refused:?}");
    }
    let describe = DescribeWorkflowExecutionRequest {
        namespace: "default".into(),
        execution: Some(WorkflowExecution {
            workflow_id: workflow_id.clone(),
            run_id: String::new(),
        }),
    };
    let describe_path =
        "/temporal.api.workflowservice.v1.WorkflowService/DescribeWorkflowExecution";
    let missing = call(
        prost::Message::encode_to_vec(&describe),
        describe_path,
        None,
    )
    .await
    .expect_err("never started");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    // With time left the same request runs.
    call(
        prost::Message::encode_to_vec(&start),
        start_path,
        Some("10S"),
    )
    .await?;
    call(
        prost::Message::encode_to_vec(&describe),
        describe_path,
        None,
    )
    .await?;
    Ok(())
}

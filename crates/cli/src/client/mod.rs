//! The client commands of `kairos`: the same names, flags, output shapes and exit codes as the
//! official `temporal` CLI for the workflow, activity, worker and operator commands. Each command is
//! one or a few gRPC calls; errors are one line on stderr and exit code 1.
use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use kairos_proto::operatorservice::operator_service_client::OperatorServiceClient;
use kairos_proto::workflowservice::workflow_service_client::WorkflowServiceClient;
use serde_json::{Value, json};
use temporalio_protos::temporal::api::common::v1::{
    Payload, Payloads, SearchAttributes, WorkflowExecution, WorkflowType,
};
use temporalio_protos::temporal::api::enums::v1::{
    EventType, HistoryEventFilterType, IndexedValueType, WorkflowExecutionStatus,
};
use temporalio_protos::temporal::api::history::v1::{HistoryEvent, history_event};
use temporalio_protos::temporal::api::operatorservice::v1 as op;
use temporalio_protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_protos::temporal::api::workflow::v1::WorkflowExecutionInfo;
use temporalio_protos::temporal::api::workflowservice::v1 as ws;
use tonic::transport::Channel;

mod activity;
mod operator;
mod worker;
mod workflow;

pub use activity::ActivityCommand;
pub use operator::OperatorCommand;
pub(crate) use operator::indexed_value_type;
pub use worker::WorkerCommand;
pub use workflow::WorkflowCommand;
use workflow::*;

/// Flags every client command takes (also from `TEMPORAL_ADDRESS` / `TEMPORAL_NAMESPACE`).
#[derive(Args, Clone)]
pub struct ClientFlags {
    /// Server address, host:port.
    #[arg(
        long,
        global = true,
        env = "TEMPORAL_ADDRESS",
        default_value = "127.0.0.1:7233"
    )]
    pub address: String,
    /// Namespace.
    #[arg(
        short = 'n',
        long,
        global = true,
        env = "TEMPORAL_NAMESPACE",
        default_value = "default"
    )]
    pub namespace: String,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// A connected client.
pub struct Client {
    channel: Channel,
    wf: WorkflowServiceClient<Channel>,
    op: OperatorServiceClient<Channel>,
    namespace: String,
    output: Output,
}

impl Client {
    pub async fn connect(flags: &ClientFlags) -> anyhow::Result<Self> {
        let uri = if flags.address.contains("://") {
            flags.address.clone()
        } else {
            format!("http://{}", flags.address)
        };
        let channel = Channel::from_shared(uri.clone())
            .with_context(|| format!("invalid address {:?}", flags.address))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .with_context(|| format!("failed to connect to {}", flags.address))?;
        Ok(Self {
            channel: channel.clone(),
            wf: WorkflowServiceClient::new(channel.clone()),
            op: OperatorServiceClient::new(channel),
            namespace: flags.namespace.clone(),
            output: flags.output,
        })
    }
}

/// One gRPC failure as one line.
fn rpc(what: &str) -> impl FnOnce(tonic::Status) -> anyhow::Error + '_ {
    move |s| anyhow::anyhow!("{what}: {}", s.message())
}

fn json_payload(text: &str) -> anyhow::Result<Payload> {
    serde_json::from_str::<Value>(text)
        .with_context(|| format!("input is not valid JSON: {text}"))?;
    Ok(Payload {
        metadata: [("encoding".to_string(), b"json/plain".to_vec())]
            .into_iter()
            .collect(),
        data: text.as_bytes().to_vec(),
        ..Default::default()
    })
}

fn payloads(inputs: &[String]) -> anyhow::Result<Option<Payloads>> {
    if inputs.is_empty() {
        return Ok(None);
    }
    Ok(Some(Payloads {
        payloads: inputs
            .iter()
            .map(|i| json_payload(i))
            .collect::<Result<_, _>>()?,
    }))
}

/// A payload as JSON (its data when it is JSON, else base64-free text or bytes).
fn payload_value(p: &Payload) -> Value {
    serde_json::from_slice(&p.data)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&p.data).into_owned()))
}

fn payloads_value(p: Option<&Payloads>) -> Value {
    match p.map(|p| p.payloads.as_slice()).unwrap_or_default() {
        [] => Value::Null,
        [one] => payload_value(one),
        many => Value::Array(many.iter().map(payload_value).collect()),
    }
}

fn parse_go_duration(text: &str) -> anyhow::Result<prost_wkt_types::Duration> {
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest.is_empty() {
        bail!("empty duration");
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .with_context(|| format!("duration {text:?} lacks a unit (e.g. 30s, 72h)"))?;
        let n: f64 = rest[..digits]
            .parse()
            .with_context(|| format!("bad duration {text:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        total += n * match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            u => bail!("unknown unit {u:?} in duration {text:?}"),
        };
        rest = &rest[unit_len..];
    }
    Ok(prost_wkt_types::Duration {
        seconds: total.trunc() as i64,
        nanos: (total.fract() * 1e9) as i32,
    })
}

fn key_values(items: &[String], what: &str) -> anyhow::Result<HashMap<String, Payload>> {
    let mut out = HashMap::new();
    for item in items {
        let (k, v) = item
            .split_once('=')
            .with_context(|| format!("--{what} {item:?}: expected KEY=JSON"))?;
        out.insert(k.to_string(), json_payload(v)?);
    }
    Ok(out)
}

fn status_text(status: i32) -> &'static str {
    match WorkflowExecutionStatus::try_from(status).unwrap_or(WorkflowExecutionStatus::Unspecified)
    {
        WorkflowExecutionStatus::Running => "Running",
        WorkflowExecutionStatus::Completed => "Completed",
        WorkflowExecutionStatus::Failed => "Failed",
        WorkflowExecutionStatus::Canceled => "Canceled",
        WorkflowExecutionStatus::Terminated => "Terminated",
        WorkflowExecutionStatus::ContinuedAsNew => "ContinuedAsNew",
        WorkflowExecutionStatus::TimedOut => "TimedOut",
        _ => "Unspecified",
    }
}

fn time_text(t: Option<&prost_wkt_types::Timestamp>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32))
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn time_json(t: Option<&prost_wkt_types::Timestamp>) -> Value {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32))
        .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

/// Aligned `key  value` lines, as the temporal CLI prints a record.
fn print_record(title: Option<&str>, rows: &[(&str, String)]) {
    if let Some(t) = title {
        println!("{t}");
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("  {k:width$}  {v}");
    }
}

/// A table with a header row, columns padded to their widest cell.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:w$}", w = widths[i]))
            .collect();
        println!("  {}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn search_attributes_value(sa: Option<&SearchAttributes>) -> Value {
    let mut map = serde_json::Map::new();
    for (k, p) in sa.map(|s| &s.indexed_fields).into_iter().flatten() {
        map.insert(k.clone(), payload_value(p));
    }
    Value::Object(map)
}

/// The fields of `WorkflowExecutionInfo` as protojson names them.
fn info_json(i: &WorkflowExecutionInfo) -> Value {
    let exec = |e: Option<&WorkflowExecution>| {
        e.map(|e| json!({"workflowId": e.workflow_id, "runId": e.run_id}))
    };
    let mut v = json!({
        "execution": exec(i.execution.as_ref()),
        "type": {"name": i.r#type.as_ref().map(|t| t.name.clone()).unwrap_or_default()},
        "startTime": time_json(i.start_time.as_ref()),
        "status": WorkflowExecutionStatus::try_from(i.status)
            .map(|s| s.as_str_name())
            .unwrap_or("WORKFLOW_EXECUTION_STATUS_UNSPECIFIED"),
        "historyLength": i.history_length.to_string(),
        "executionTime": time_json(i.execution_time.as_ref()),
        "taskQueue": i.task_queue,
        "stateTransitionCount": i.state_transition_count.to_string(),
        "historySizeBytes": i.history_size_bytes.to_string(),
        "searchAttributes": search_attributes_value(i.search_attributes.as_ref()),
        "rootExecution": exec(i.root_execution.as_ref()),
        "firstRunId": i.first_run_id,
    });
    if let Some(obj) = v.as_object_mut() {
        if i.close_time.is_some() {
            obj.insert("closeTime".into(), time_json(i.close_time.as_ref()));
        }
        if let Some(p) = exec(i.parent_execution.as_ref()) {
            obj.insert("parentExecution".into(), p);
        }
        obj.retain(|_, v| !v.is_null());
    }
    v
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

fn identity() -> String {
    format!("{}@kairos-cli", std::process::id())
}

//! Worker heartbeats: what `RecordWorkerHeartbeat` (and `ShutdownWorker`) report, kept in
//! memory per namespace and never stored, read back by `ListWorkers`, `CountWorkers` and
//! `DescribeWorker`. As in the reference: each heartbeat replaces the worker's entry (keyed by
//! `worker_instance_key`), an entry expires `ttl` after the server last heard from it, a
//! heartbeat with status SHUTDOWN removes it, and past `max_entries` the oldest entries (older
//! than a minute) make room. Lists filter with the list language over the heartbeat's fields
//! and page in key order.
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use temporalio_protos::temporal::api::enums::v1::WorkerStatus;
use temporalio_protos::temporal::api::worker::v1::{WorkerHeartbeat, WorkerListInfo};

use kairos_visibility::parse::{CmpOp, Expr, Literal};

/// Entries younger than this are never evicted to make room.
const MIN_EVICT_AGE: Duration = Duration::from_secs(60);

/// The heartbeats of live workers, per namespace id.
pub(crate) struct Registry {
    entries: Mutex<HashMap<String, BTreeMap<String, Entry>>>,
    ttl: Duration,
    max_entries: usize,
}

struct Entry {
    heartbeat: WorkerHeartbeat,
    at: Instant,
}

impl Registry {
    pub(crate) fn new(ttl: Duration, max_entries: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            ttl,
            max_entries,
        }
    }

    /// Records a heartbeat (a SHUTDOWN one removes the worker).
    pub(crate) fn record(&self, namespace_id: &str, heartbeat: WorkerHeartbeat) {
        let now = Instant::now();
        let mut all = self.entries.lock();
        let key = heartbeat.worker_instance_key.clone();
        if heartbeat.status == WorkerStatus::Shutdown as i32 {
            if let Some(ns) = all.get_mut(namespace_id) {
                ns.remove(&key);
            }
            return;
        }
        all.entry(namespace_id.to_string())
            .or_default()
            .insert(key, Entry { heartbeat, at: now });
        let total: usize = all.values().map(BTreeMap::len).sum();
        if total > self.max_entries {
            make_room(&mut all, total - self.max_entries, now);
        }
    }

    /// The live workers of a namespace, in key order.
    pub(crate) fn live(&self, namespace_id: &str) -> Vec<WorkerHeartbeat> {
        let now = Instant::now();
        let mut all = self.entries.lock();
        let Some(ns) = all.get_mut(namespace_id) else {
            return Vec::new();
        };
        ns.retain(|_, e| now.duration_since(e.at) < self.ttl);
        ns.values().map(|e| e.heartbeat.clone()).collect()
    }
}

/// Evicts up to `n` entries, oldest first, none younger than [`MIN_EVICT_AGE`].
fn make_room(all: &mut HashMap<String, BTreeMap<String, Entry>>, n: usize, now: Instant) {
    let mut old: Vec<(Instant, String, String)> = all
        .iter()
        .flat_map(|(ns, entries)| {
            entries
                .iter()
                .filter(|(_, e)| now.duration_since(e.at) >= MIN_EVICT_AGE)
                .map(|(k, e)| (e.at, ns.clone(), k.clone()))
        })
        .collect();
    old.sort();
    for (_, ns, key) in old.into_iter().take(n) {
        if let Some(entries) = all.get_mut(&ns) {
            entries.remove(&key);
        }
    }
}

/// A worker list filter, checked against each heartbeat.
pub(crate) struct Filter(Option<Expr>);

impl Filter {
    /// Parses a `ListWorkers`/`CountWorkers` query (empty: every worker).
    pub(crate) fn parse(query: &str) -> Result<Filter, String> {
        if query.trim().is_empty() {
            return Ok(Filter(None));
        }
        if query.to_ascii_lowercase().contains(" limit ") {
            return Err("operation is not supported: 'limit' clause".into());
        }
        let parsed =
            kairos_visibility::parse::parse(query).map_err(|e| format!("malformed query: {e}"))?;
        if parsed.group_by.is_some() {
            return Err("operation is not supported: 'group by' clause".into());
        }
        if let Some(expr) = &parsed.filter {
            supported(expr)?;
        }
        Ok(Filter(parsed.filter))
    }

    pub(crate) fn matches(&self, w: &WorkerHeartbeat) -> bool {
        self.0.as_ref().is_none_or(|e| eval(e, w))
    }
}

fn supported(e: &Expr) -> Result<(), String> {
    match e {
        Expr::And(a, b) | Expr::Or(a, b) => {
            supported(a)?;
            supported(b)
        }
        Expr::Not(_) => Err("operation is not supported: 'NOT' expression".into()),
        Expr::In { .. } => Err("operation is not supported: 'IN' expression".into()),
        _ => Ok(()),
    }
}

/// A heartbeat field as the filter sees it.
enum Field {
    Text(Option<String>),
    /// Unix nanoseconds.
    Time(Option<i64>),
    /// Not a worker field: matches nothing, as in the reference.
    Unknown,
}

fn field(w: &WorkerHeartbeat, name: &str) -> Field {
    let text = |s: &str| Field::Text((!s.is_empty()).then(|| s.to_string()));
    let time = |t: Option<&prost_wkt_types::Timestamp>| {
        // Saturating: a heartbeat's timestamps are whatever the worker sent.
        Field::Time(t.map(|t| {
            t.seconds
                .saturating_mul(1_000_000_000)
                .saturating_add(i64::from(t.nanos))
        }))
    };
    let version = w.deployment_version.as_ref();
    match name {
        "WorkerInstanceKey" => text(&w.worker_instance_key),
        "WorkerIdentity" => text(&w.worker_identity),
        "HostName" => text(w.host_info.as_ref().map_or("", |h| h.host_name.as_str())),
        "TaskQueue" => text(&w.task_queue),
        "DeploymentName" => text(version.map_or("", |v| v.deployment_name.as_str())),
        "BuildId" => text(version.map_or("", |v| v.build_id.as_str())),
        "SdkName" => text(&w.sdk_name),
        "SdkVersion" => text(&w.sdk_version),
        "WorkerStatus" | "Status" => text(&status_name(w.status)),
        "StartTime" => time(w.start_time.as_ref()),
        "HeartbeatTime" => time(w.heartbeat_time.as_ref()),
        _ => Field::Unknown,
    }
}

/// A worker status as queries and the CLI write it ("Running").
pub(crate) fn status_name(status: i32) -> String {
    let status = WorkerStatus::try_from(status).unwrap_or(WorkerStatus::Unspecified);
    kairos_core::names::pascal_case(status.as_str_name(), "WORKER_STATUS_")
}

fn nanos(v: &Literal) -> Option<i64> {
    match v {
        Literal::Int(n) => Some(*n),
        Literal::Str(s) => kairos_visibility::compile::parse_datetime_ns(s),
        _ => None,
    }
}

fn eval(e: &Expr, w: &WorkerHeartbeat) -> bool {
    match e {
        Expr::And(a, b) => eval(a, w) && eval(b, w),
        Expr::Or(a, b) => eval(a, w) || eval(b, w),
        Expr::Not(a) => !eval(a, w),
        Expr::In { .. } => false,
        Expr::Compare { attr, op, value } => match field(w, attr) {
            Field::Text(Some(s)) => match (op, value) {
                (CmpOp::Eq, Literal::Str(v)) => s == *v,
                (CmpOp::Ne, Literal::Str(v)) => s != *v,
                _ => false,
            },
            Field::Time(Some(t)) => nanos(value).is_some_and(|v| match op {
                CmpOp::Eq => t == v,
                CmpOp::Ne => t != v,
                CmpOp::Lt => t < v,
                CmpOp::Le => t <= v,
                CmpOp::Gt => t > v,
                CmpOp::Ge => t >= v,
            }),
            _ => false,
        },
        Expr::Between {
            attr,
            low,
            high,
            negated,
        } => match (field(w, attr), nanos(low), nanos(high)) {
            (Field::Time(Some(t)), Some(lo), Some(hi)) => (lo <= t && t <= hi) != *negated,
            _ => false,
        },
        Expr::StartsWith {
            attr,
            prefix,
            negated,
        } => match field(w, attr) {
            Field::Text(Some(s)) => s.starts_with(prefix.as_str()) != *negated,
            _ => false,
        },
        Expr::IsNull { attr, negated } => {
            let null = match field(w, attr) {
                Field::Text(v) => v.is_none(),
                Field::Time(v) => v.is_none(),
                Field::Unknown => return false,
            };
            null != *negated
        }
    }
}

/// The list entry of a worker (`ListWorkersResponse.workers`).
pub(crate) fn list_info(w: &WorkerHeartbeat) -> WorkerListInfo {
    let host = w.host_info.clone().unwrap_or_default();
    WorkerListInfo {
        worker_instance_key: w.worker_instance_key.clone(),
        worker_identity: w.worker_identity.clone(),
        task_queue: w.task_queue.clone(),
        deployment_version: w.deployment_version.clone(),
        sdk_name: w.sdk_name.clone(),
        sdk_version: w.sdk_version.clone(),
        status: w.status,
        start_time: w.start_time,
        host_name: host.host_name,
        worker_grouping_key: host.worker_grouping_key,
        process_id: host.process_id,
        plugins: w.plugins.clone(),
        drivers: w.drivers.clone(),
    }
}

/// The page token: the last key of the page before (`{"l":"<key>"}`, the reference's shape).
pub(crate) fn token_for(last_key: &str) -> Vec<u8> {
    serde_json::json!({ "l": last_key })
        .to_string()
        .into_bytes()
}

/// The key a page token continues after.
pub(crate) fn after_key(token: &[u8]) -> Result<String, String> {
    serde_json::from_slice::<serde_json::Value>(token)
        .ok()
        .and_then(|v| v.get("l").and_then(|l| l.as_str()).map(str::to_string))
        .ok_or_else(|| "invalid next_page_token".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use temporalio_protos::temporal::api::worker::v1::WorkerHostInfo;

    fn worker(key: &str, queue: &str, status: WorkerStatus, started_s: i64) -> WorkerHeartbeat {
        WorkerHeartbeat {
            worker_instance_key: key.into(),
            worker_identity: format!("{key}@host"),
            task_queue: queue.into(),
            status: status as i32,
            host_info: Some(WorkerHostInfo {
                host_name: "host-a".into(),
                ..Default::default()
            }),
            start_time: Some(prost_wkt_types::Timestamp {
                seconds: started_s,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn heartbeats_replace_expire_and_leave_on_shutdown() {
        let r = Registry::new(Duration::from_millis(50), 100);
        r.record("ns", worker("b", "q1", WorkerStatus::Running, 1));
        r.record("ns", worker("a", "q1", WorkerStatus::Running, 1));
        r.record("ns", worker("a", "q2", WorkerStatus::Running, 1));
        r.record("other", worker("c", "q1", WorkerStatus::Running, 1));
        let live = r.live("ns");
        let keys: Vec<_> = live
            .iter()
            .map(|w| w.worker_instance_key.as_str())
            .collect();
        assert_eq!(keys, ["a", "b"], "one entry per key, in key order");
        assert_eq!(live[0].task_queue, "q2", "the last heartbeat wins");
        r.record("ns", worker("b", "q1", WorkerStatus::Shutdown, 1));
        assert_eq!(r.live("ns").len(), 1);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !r.live("ns").is_empty() {
            assert!(Instant::now() < deadline, "entries expire after the ttl");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(r.live("nowhere").is_empty());
    }

    #[test]
    fn filters_read_the_heartbeat_fields() {
        let w = worker("k1", "orders", WorkerStatus::Running, 1_700_000_000);
        let yes = [
            "",
            "TaskQueue = 'orders'",
            "WorkerStatus = 'Running' AND HostName = 'host-a'",
            "Status = 'Running'",
            "WorkerInstanceKey STARTS_WITH 'k'",
            "TaskQueue = 'x' OR SdkName IS NULL",
            "StartTime > '2023-01-01T00:00:00Z'",
            "StartTime BETWEEN 1600000000000000000 AND 1800000000000000000",
            "HeartbeatTime IS NULL",
        ];
        for q in yes {
            assert!(Filter::parse(q).expect(q).matches(&w), "{q}");
        }
        let no = [
            "TaskQueue = 'payments'",
            "TaskQueue != 'orders'",
            "Unknown = 'x'",
            "StartTime < '2023-01-01T00:00:00Z'",
            "HostName NOT STARTS_WITH 'host'",
        ];
        for q in no {
            assert!(!Filter::parse(q).expect(q).matches(&w), "{q}");
        }
        for bad in [
            "TaskQueue = ",
            "TaskQueue IN ('a')",
            "TaskQueue = 'a' LIMIT 1 ",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            status_name(WorkerStatus::ShuttingDown as i32),
            "ShuttingDown"
        );
        // Timestamps at the ends of the range compare without overflowing.
        let mut extreme = w.clone();
        extreme.start_time = Some(prost_wkt_types::Timestamp {
            seconds: i64::MAX,
            nanos: i32::MAX,
        });
        assert!(
            Filter::parse("StartTime > 0")
                .expect("parses")
                .matches(&extreme)
        );
        extreme.start_time = Some(prost_wkt_types::Timestamp {
            seconds: i64::MIN,
            nanos: i32::MIN,
        });
        assert!(
            !Filter::parse("StartTime > 0")
                .expect("parses")
                .matches(&extreme)
        );
    }

    #[test]
    fn lists_page_in_key_order_and_hide_system_workers() {
        use temporalio_protos::temporal::api::workflowservice::v1::ListWorkersRequest;
        let r = Registry::new(Duration::from_secs(60), 100);
        for key in ["c", "a", "d", "b"] {
            r.record("ns", worker(key, "q", WorkerStatus::Running, 1));
        }
        r.record(
            "ns",
            worker("sys", "temporal-sys-scheduler", WorkerStatus::Running, 1),
        );
        let mut req = ListWorkersRequest {
            page_size: 3,
            ..Default::default()
        };
        let page = rpc::list(&r, "ns", &req).expect("lists");
        let keys: Vec<_> = page
            .workers
            .iter()
            .map(|w| w.worker_instance_key.clone())
            .collect();
        assert_eq!(keys, ["a", "b", "c"]);
        #[allow(deprecated)]
        let full = page.workers_info.len();
        assert_eq!(full, 3, "the deprecated list is filled too");
        req.next_page_token = page.next_page_token;
        let page = rpc::list(&r, "ns", &req).expect("lists");
        let keys: Vec<_> = page
            .workers
            .iter()
            .map(|w| w.worker_instance_key.clone())
            .collect();
        assert_eq!(keys, ["d"]);
        assert!(page.next_page_token.is_empty());
        req.next_page_token = Vec::new();
        req.page_size = 0;
        req.include_system_workers = true;
        assert_eq!(rpc::list(&r, "ns", &req).expect("lists").workers.len(), 5);
        req.next_page_token = b"junk".to_vec();
        let bad = rpc::list(&r, "ns", &req).expect_err("a bad token");
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn page_tokens_carry_the_last_key() {
        assert_eq!(after_key(&token_for("k\"7")).as_deref(), Ok("k\"7"));
        assert!(after_key(b"junk").is_err());
    }
}

/// The RPCs, given the registry and the resolved namespace.
pub(crate) mod rpc {
    use super::*;
    use temporalio_protos::temporal::api::worker::v1::WorkerInfo;
    use temporalio_protos::temporal::api::workflowservice::v1::{
        CountWorkersRequest, CountWorkersResponse, DescribeWorkerRequest, DescribeWorkerResponse,
        ListWorkersRequest, ListWorkersResponse, RecordWorkerHeartbeatRequest,
    };
    use tonic::Status;

    /// Workers on the system's own task queues, hidden unless asked for.
    fn system(w: &WorkerHeartbeat) -> bool {
        w.task_queue.starts_with("temporal-sys-")
    }

    pub(crate) fn record(r: &Registry, namespace_id: &str, req: RecordWorkerHeartbeatRequest) {
        for heartbeat in req.worker_heartbeat {
            r.record(namespace_id, heartbeat);
        }
    }

    pub(crate) fn list(
        r: &Registry,
        namespace_id: &str,
        req: &ListWorkersRequest,
    ) -> Result<ListWorkersResponse, Status> {
        let filter = Filter::parse(&req.query).map_err(Status::invalid_argument)?;
        let matching: Vec<WorkerHeartbeat> = r
            .live(namespace_id)
            .into_iter()
            .filter(|w| req.include_system_workers || !system(w))
            .filter(|w| filter.matches(w))
            .collect();
        let after = if req.next_page_token.is_empty() || matching.is_empty() {
            None
        } else {
            Some(after_key(&req.next_page_token).map_err(Status::invalid_argument)?)
        };
        let mut page: Vec<WorkerHeartbeat> = matching
            .into_iter()
            .filter(|w| after.as_ref().is_none_or(|k| w.worker_instance_key > *k))
            .collect();
        let size = usize::try_from(req.page_size).unwrap_or(0);
        let mut next_page_token = Vec::new();
        if size > 0 && page.len() > size {
            page.truncate(size);
            next_page_token = token_for(&page[size - 1].worker_instance_key);
        }
        Ok(ListWorkersResponse {
            workers: page.iter().map(list_info).collect(),
            #[allow(deprecated)]
            workers_info: page
                .into_iter()
                .map(|w| WorkerInfo {
                    worker_heartbeat: Some(w),
                })
                .collect(),
            next_page_token,
        })
    }

    pub(crate) fn count(
        r: &Registry,
        namespace_id: &str,
        req: &CountWorkersRequest,
    ) -> Result<CountWorkersResponse, Status> {
        let filter = Filter::parse(&req.query).map_err(Status::invalid_argument)?;
        let count = r
            .live(namespace_id)
            .iter()
            .filter(|w| req.include_system_workers || !system(w))
            .filter(|w| filter.matches(w))
            .count();
        Ok(CountWorkersResponse {
            count: count as i64,
        })
    }

    pub(crate) fn describe(
        r: &Registry,
        namespace_id: &str,
        req: &DescribeWorkerRequest,
    ) -> Result<DescribeWorkerResponse, Status> {
        let worker = r
            .live(namespace_id)
            .into_iter()
            .find(|w| w.worker_instance_key == req.worker_instance_key)
            .ok_or_else(|| {
                Status::not_found(format!("Worker {} not found", req.worker_instance_key))
            })?;
        Ok(DescribeWorkerResponse {
            worker_info: Some(WorkerInfo {
                worker_heartbeat: Some(worker),
            }),
        })
    }
}

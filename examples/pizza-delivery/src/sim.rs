//! The world around the shop, as one HTTP service with its own SQLite ledger: a payment
//! gateway (idempotent by order id, failing transiently at a configurable rate, refusing
//! declined cards), a cafe that cooks and then sends `cafe_ready` through the Temporal client
//! like a kitchen app, and couriers that report progress (and sometimes vanish).
//!
//! Faults are random at the configured rates, or forced per order by words in its id:
//! `flaky-pay` (the first two payment calls fail, the second after charging), `slow-cafe` (never
//! cooked), `lost-courier` (the first courier vanishes).
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use parking_lot::Mutex;
use rusqlite::{Connection, params};
use serde_json::{Value, json};
use temporalio_client::{Client, WorkflowSignalOptions};

use crate::workflow::PizzaOrder;

/// Fault rates (0.0 to 1.0) and timings.
#[derive(Debug, Clone)]
pub struct Faults {
    pub payment_failure_rate: f64,
    pub slow_cafe_rate: f64,
    pub vanishing_courier_rate: f64,
    pub cook_time: Duration,
    pub drive_time: Duration,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            payment_failure_rate: 0.0,
            slow_cafe_rate: 0.0,
            vanishing_courier_rate: 0.0,
            cook_time: Duration::from_millis(200),
            drive_time: Duration::from_millis(500),
        }
    }
}

struct Courier {
    started: Instant,
    vanished: bool,
}

struct Sim {
    ledger: Mutex<Connection>,
    faults: Faults,
    temporal: Option<Client>,
    couriers: Mutex<HashMap<String, Courier>>,
    pay_calls: Mutex<HashMap<String, u32>>,
    next_courier: AtomicU64,
    rng: AtomicU64,
}

impl Sim {
    /// A number in [0, 1) (xorshift; reproducible enough for a simulation).
    fn roll(&self) -> f64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Opens (creating) the ledger database.
pub fn open_ledger(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE IF NOT EXISTS charges (order_id TEXT PRIMARY KEY, amount_cents INTEGER NOT NULL,
             refunded INTEGER NOT NULL DEFAULT 0);
         CREATE TABLE IF NOT EXISTS cafe (order_id TEXT PRIMARY KEY, workflow_id TEXT NOT NULL,
             state TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS loyalty (order_id TEXT PRIMARY KEY, customer TEXT NOT NULL,
             points INTEGER NOT NULL);",
    )?;
    Ok(conn)
}

/// The simulator's routes; `temporal` sends the cafe's signals (none: the cafe never calls).
pub fn router(ledger: Connection, faults: Faults, temporal: Option<Client>) -> Router {
    let sim = Arc::new(Sim {
        ledger: Mutex::new(ledger),
        faults,
        temporal,
        couriers: Mutex::new(HashMap::new()),
        pay_calls: Mutex::new(HashMap::new()),
        next_courier: AtomicU64::new(1),
        rng: AtomicU64::new(0x2545_f491_4f6c_dd1d),
    });
    Router::new()
        .route("/pay", post(pay))
        .route("/refund", post(refund))
        .route("/loyalty", post(loyalty))
        .route("/cafe/order", post(cafe_order))
        .route("/cafe/cancel", post(cafe_cancel))
        .route("/courier/assign", post(courier_assign))
        .route("/courier/progress", post(courier_progress))
        .route("/ledger", post(ledger_dump))
        .with_state(sim)
}

/// Serves the simulator on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> anyhow::Result<()> {
    axum::serve(listener, router).await?;
    Ok(())
}

type Reply = (StatusCode, Json<Value>);

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

async fn pay(State(sim): State<Arc<Sim>>, Json(req): Json<Value>) -> Reply {
    let order = text(&req, "order_id");
    let amount = req.get("amount_cents").and_then(Value::as_u64).unwrap_or(0);
    if text(&req, "card") == "declined" {
        return (
            StatusCode::PAYMENT_REQUIRED,
            Json(json!({"error": "card declined"})),
        );
    }
    let call = {
        let mut calls = sim.pay_calls.lock();
        let n = calls.entry(order.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let forced = order.contains("flaky-pay") && call <= 2;
    let random = !forced && sim.roll() < sim.faults.payment_failure_rate;
    // Half of the failures happen after the charge is recorded (the answer is lost): the retry
    // must not charge twice.
    let after = if forced { call == 2 } else { sim.roll() < 0.5 };
    if (forced || random) && !after {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "gateway timeout"})),
        );
    }
    let stored = sim.ledger.lock().execute(
        "INSERT OR IGNORE INTO charges (order_id, amount_cents) VALUES (?1, ?2)",
        params![order, amount as i64],
    );
    if let Err(e) = stored {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        );
    }
    if forced || random {
        return (
            StatusCode::BAD_GATEWAY,
            Json(json!({"error": "upstream reset"})),
        );
    }
    (StatusCode::OK, Json(json!({"charged": order})))
}

async fn refund(State(sim): State<Arc<Sim>>, Json(req): Json<Value>) -> Reply {
    let order = text(&req, "order_id");
    // A refund before any charge leaves a tombstone, so a late charge attempt cannot create a
    // charge nobody will refund.
    let done = sim.ledger.lock().execute(
        "INSERT INTO charges (order_id, amount_cents, refunded) VALUES (?1, 0, 1)
         ON CONFLICT (order_id) DO UPDATE SET refunded = 1",
        [&order],
    );
    match done {
        Ok(_) => (StatusCode::OK, Json(json!({"refunded": order}))),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        ),
    }
}

async fn loyalty(State(sim): State<Arc<Sim>>, Json(req): Json<Value>) -> Reply {
    let points = req.get("points").and_then(Value::as_u64).unwrap_or(0);
    let _ = sim.ledger.lock().execute(
        "INSERT OR IGNORE INTO loyalty (order_id, customer, points) VALUES (?1, ?2, ?3)",
        params![
            text(&req, "order_id"),
            text(&req, "customer"),
            points as i64
        ],
    );
    (StatusCode::OK, Json(json!({"points": points})))
}

async fn cafe_order(State(sim): State<Arc<Sim>>, Json(req): Json<Value>) -> Reply {
    let order = text(&req, "order_id");
    let workflow_id = text(&req, "workflow_id");
    let inserted = sim
        .ledger
        .lock()
        .execute(
            "INSERT OR IGNORE INTO cafe (order_id, workflow_id, state) VALUES (?1, ?2, 'cooking')",
            params![order, workflow_id],
        )
        .unwrap_or(0);
    let slow = order.contains("slow-cafe") || sim.roll() < sim.faults.slow_cafe_rate;
    if inserted > 0 && !slow {
        let sim = sim.clone();
        let order = order.clone();
        tokio::spawn(async move {
            tokio::time::sleep(sim.faults.cook_time).await;
            let cooking = sim
                .ledger
                .lock()
                .execute(
                    "UPDATE cafe SET state = 'ready' WHERE order_id = ?1 AND state = 'cooking'",
                    [&order],
                )
                .unwrap_or(0);
            if cooking == 0 {
                return; // cancelled meanwhile
            }
            let Some(client) = sim.temporal.clone() else {
                return;
            };
            // Like a kitchen app: tell the order, retrying while the server is away.
            for _ in 0..600 {
                let handle = client.get_workflow_handle::<PizzaOrder>(&workflow_id);
                let sent = handle
                    .signal(PizzaOrder::cafe_ready, (), WorkflowSignalOptions::default())
                    .await;
                match sent {
                    Ok(()) => return,
                    Err(e)
                        if e.to_string().contains("not found")
                            || e.to_string().contains("completed") =>
                    {
                        return;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        });
    }
    (StatusCode::OK, Json(json!({"accepted": order})))
}

async fn cafe_cancel(State(sim): State<Arc<Sim>>, Json(req): Json<Value>) -> Reply {
    let order = text(&req, "order_id");
    let done = sim.ledger.lock().execute(
        "INSERT INTO cafe (order_id, workflow_id, state) VALUES (?1, '', 'cancelled')
         ON CONFLICT (order_id) DO UPDATE SET state = 'cancelled'",
        [&order],
    );
    match done {
        Ok(_) => (StatusCode::OK, Json(json!({"cancelled": order}))),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        ),
    }
}

async fn courier_assign(State(sim): State<Arc<Sim>>, Json(req): Json<Value>) -> Reply {
    let order = text(&req, "order_id");
    let attempt = req.get("attempt").and_then(Value::as_u64).unwrap_or(1);
    let vanish = (order.contains("lost-courier") && attempt == 1)
        || sim.roll() < sim.faults.vanishing_courier_rate;
    let id = format!(
        "courier-{}",
        sim.next_courier.fetch_add(1, Ordering::Relaxed)
    );
    sim.couriers.lock().insert(
        id.clone(),
        Courier {
            started: Instant::now(),
            vanished: vanish,
        },
    );
    (StatusCode::OK, Json(json!({"courier": id})))
}

async fn courier_progress(State(sim): State<Arc<Sim>>, Json(req): Json<Value>) -> Reply {
    let id = text(&req, "courier");
    let couriers = sim.couriers.lock();
    let Some(c) = couriers.get(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such courier"})),
        );
    };
    let drive = sim.faults.drive_time.as_secs_f64().max(0.001);
    let percent = ((c.started.elapsed().as_secs_f64() / drive) * 100.0).min(100.0) as u64;
    (
        StatusCode::OK,
        Json(
            json!({"percent": if c.vanished { percent.min(30) } else { percent }, "vanished": c.vanished}),
        ),
    )
}

async fn ledger_dump(State(sim): State<Arc<Sim>>) -> Reply {
    let conn = sim.ledger.lock();
    let rows = |sql: &str| -> Vec<Value> {
        let Ok(mut stmt) = conn.prepare(sql) else {
            return Vec::new();
        };
        let n = stmt.column_count();
        let names: Vec<String> = (0..n)
            .map(|i| stmt.column_name(i).unwrap_or("").to_string())
            .collect();
        stmt.query_map([], |r| {
            let mut obj = serde_json::Map::new();
            for (i, name) in names.iter().enumerate() {
                let v: rusqlite::types::Value = r.get(i)?;
                obj.insert(
                    name.clone(),
                    match v {
                        rusqlite::types::Value::Integer(i) => json!(i),
                        rusqlite::types::Value::Text(t) => json!(t),
                        _ => Value::Null,
                    },
                );
            }
            Ok(Value::Object(obj))
        })
        .map(|it| it.filter_map(Result::ok).collect())
        .unwrap_or_default()
    };
    (
        StatusCode::OK,
        Json(json!({
            "charges": rows("SELECT order_id, amount_cents, refunded FROM charges"),
            "cafe": rows("SELECT order_id, state FROM cafe"),
            "loyalty": rows("SELECT order_id, points FROM loyalty"),
        })),
    )
}

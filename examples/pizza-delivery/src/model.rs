//! What an order is, and what the `status` query answers.
use serde::{Deserialize, Serialize};

/// An order as the shop takes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub customer: String,
    pub amount_cents: u64,
    /// `"ok"`, or `"declined"` for a card the gateway refuses.
    pub card: String,
    /// How long the cafe may take to cook it before the order is cancelled and refunded.
    pub cooking_deadline_secs: u64,
    /// Base URL of the simulator (payment gateway, cafe, couriers).
    pub sim: String,
}

/// The `status` query's answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// taken, charging, cooking, delivering, then a final one: delivered, payment_declined,
    /// refunded (the cafe never cooked it), cancelled.
    pub stage: String,
    /// Each stage reached, with its workflow time (ms since the epoch).
    pub stages: Vec<(String, i64)>,
    pub courier: Option<String>,
    pub tip_cents: u64,
}

/// The final states an order can reach.
pub const FINAL_STAGES: &[&str] = &["delivered", "payment_declined", "refunded", "cancelled"];

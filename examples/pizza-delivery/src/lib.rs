//! The pizza-delivery example: the `PizzaOrder` workflow and its activities (official Rust
//! SDK), and the simulated world they talk to (`sim`: payment gateway, cafe and couriers over
//! HTTP, with their own SQLite ledger and configurable faults).
pub mod activities;
pub mod chaos;
pub mod http;
pub mod model;
pub mod sim;
pub mod workflow;
pub mod workflow_v1;

pub use activities::Pizza;
pub use model::{Order, Status};
pub use workflow::PizzaOrder;

/// The task queue the example's workers poll.
pub const TASK_QUEUE: &str = "pizza";

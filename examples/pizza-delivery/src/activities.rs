//! The activities: each one HTTP call (or a few) to the simulator. Transient failures are
//! plain errors, retried by the server per the workflow's retry policy; a declined card is a
//! non-retryable `CardDeclined` failure.
use std::time::Duration;

use serde_json::json;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::{ActivityContext, ActivityError, activities};

use crate::http::request;
use crate::model::Order;

/// The activities of the example (stateless: everything lives in the simulator).
#[derive(Default, Clone)]
pub struct Pizza;

fn transient(what: &str, e: impl std::fmt::Display) -> ActivityError {
    ActivityError::application(ApplicationFailure::new(format!("{what}: {e}")))
}

async fn call(
    order: &Order,
    path: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value, ActivityError> {
    let answer = request(&order.sim, "POST", path, &body)
        .await
        .map_err(|e| transient(path, e))?;
    if answer.status >= 300 {
        return Err(transient(
            path,
            format!("HTTP {}: {}", answer.status, answer.body),
        ));
    }
    Ok(answer.body)
}

#[activities]
impl Pizza {
    /// Charges the customer; the order id is the gateway's idempotency key.
    #[activity(name = "charge_payment")]
    pub async fn charge_payment(
        _ctx: ActivityContext,
        order: Order,
    ) -> Result<String, ActivityError> {
        let body =
            json!({"order_id": order.id, "amount_cents": order.amount_cents, "card": order.card});
        let answer = request(&order.sim, "POST", "/pay", &body)
            .await
            .map_err(|e| transient("/pay", e))?;
        match answer.status {
            200 => Ok(order.id.clone()),
            402 => Err(ActivityError::application(
                ApplicationFailure::builder("card declined")
                    .type_name("CardDeclined".to_owned())
                    .non_retryable(true)
                    .build(),
            )),
            s => Err(transient("/pay", format!("HTTP {s}"))),
        }
    }

    #[activity(name = "refund_payment")]
    pub async fn refund_payment(_ctx: ActivityContext, order: Order) -> Result<(), ActivityError> {
        call(&order, "/refund", json!({"order_id": order.id})).await?;
        Ok(())
    }

    /// Version 2: loyalty points for the customer.
    #[activity(name = "award_loyalty_points")]
    pub async fn award_loyalty_points(
        _ctx: ActivityContext,
        order: Order,
    ) -> Result<u64, ActivityError> {
        let points = order.amount_cents / 100;
        call(
            &order,
            "/loyalty",
            json!({"order_id": order.id, "customer": order.customer, "points": points}),
        )
        .await?;
        Ok(points)
    }

    /// Hands the order to the cafe, which signals `cafe_ready` to `workflow_id` once cooked.
    #[activity(name = "send_to_cafe")]
    pub async fn send_to_cafe(
        _ctx: ActivityContext,
        (order, workflow_id): (Order, String),
    ) -> Result<(), ActivityError> {
        call(
            &order,
            "/cafe/order",
            json!({"order_id": order.id, "workflow_id": workflow_id}),
        )
        .await?;
        Ok(())
    }

    #[activity(name = "cancel_at_cafe")]
    pub async fn cancel_at_cafe(_ctx: ActivityContext, order: Order) -> Result<(), ActivityError> {
        call(&order, "/cafe/cancel", json!({"order_id": order.id})).await?;
        Ok(())
    }

    /// Sends a courier and follows the drive, heartbeating its progress; a courier that stops
    /// reporting stops the heartbeats, and the server sends another after the heartbeat timeout.
    #[activity(name = "dispatch_courier")]
    pub async fn dispatch_courier(
        ctx: ActivityContext,
        order: Order,
    ) -> Result<String, ActivityError> {
        let attempt = ctx.info().attempt;
        let assigned = call(
            &order,
            "/courier/assign",
            json!({"order_id": order.id, "attempt": attempt}),
        )
        .await?;
        let courier = assigned
            .get("courier")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_string();
        loop {
            let progress = call(&order, "/courier/progress", json!({"courier": courier})).await?;
            if progress.get("vanished").and_then(|v| v.as_bool()) == Some(true) {
                // Gone without a word: no more heartbeats, so the server times this attempt out
                // and sends another courier; this attempt then frees its slot.
                tokio::select! {
                    _ = ctx.cancelled() => return Err(ActivityError::cancelled()),
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {
                        return Err(transient("courier", "vanished"));
                    }
                }
            }
            let percent = progress
                .get("percent")
                .and_then(|p| p.as_u64())
                .unwrap_or(0);
            ctx.record_heartbeat((courier.clone(), percent)).await?;
            if percent >= 100 {
                return Ok(courier);
            }
            tokio::select! {
                _ = ctx.cancelled() => return Err(ActivityError::cancelled()),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }
}

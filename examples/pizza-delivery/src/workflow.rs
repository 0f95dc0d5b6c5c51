//! `PizzaOrder(order)`: charge, hand to the cafe, wait until it is cooked (or give up at the
//! cooking deadline: cancel at the cafe and refund), call a courier, deliver. A customer
//! cancellation before pickup cancels at the cafe and refunds; once the pizza is on its way it
//! is delivered anyway. Version 2 awards loyalty points behind `patched("loyalty-points")`.
use std::time::{Duration, UNIX_EPOCH};

use temporalio_common::RetryPolicy;
use temporalio_sdk::workflows::{select, workflow, workflow_methods};
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, SyncWorkflowContext, TimerResult,
    WorkflowCancellationToken, WorkflowContext, WorkflowContextView, WorkflowResult,
    WorkflowTermination,
};

use crate::activities::Pizza;
use crate::model::{Order, Status};

/// The workflow's state: what the query reports, and whether the cafe said "cooked".
#[workflow]
#[derive(Default)]
pub struct PizzaOrder {
    status: Status,
    cooked: bool,
}

/// Largest tip accepted, in cents.
pub const MAX_TIP_CENTS: u64 = 10_000;

pub(crate) fn options(retry: RetryPolicy) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
        .retry_policy(retry)
        .build()
}

/// Compensation must run even when the workflow is being cancelled: a token of its own.
pub(crate) fn detached(retry: RetryPolicy) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
        .retry_policy(retry)
        .cancellation_token(WorkflowCancellationToken::new())
        .build()
}

pub(crate) fn quick_retries() -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_millis(200))
        .backoff_coefficient(2.0)
        .maximum_interval(Duration::from_secs(5))
        .build()
}

pub(crate) fn declined(e: &ActivityExecutionError) -> bool {
    let mut failure = e.failure();
    while let Some(f) = failure {
        if let Some(
            temporalio_common::protos::temporal::api::failure::v1::failure::FailureInfo::ApplicationFailureInfo(info),
        ) = &f.failure_info
            && info.r#type == "CardDeclined"
        {
            return true;
        }
        failure = f.cause.as_deref();
    }
    false
}

impl PizzaOrder {
    fn reach(ctx: &WorkflowContext<Self>, stage: &str) {
        let now = ctx
            .workflow_time()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        ctx.state_mut(|s| {
            s.status.stage = stage.to_string();
            s.status.stages.push((stage.to_string(), now));
        });
    }

    /// Whether the customer has asked to cancel.
    fn cancel_requested(ctx: &WorkflowContext<Self>) -> bool {
        ctx.cancellation_token().is_cancelled()
    }

    /// Compensates a cancellation that came before the pizza left: the workflow ends cancelled.
    async fn cancel_order(ctx: &WorkflowContext<Self>, order: &Order) -> WorkflowResult<String> {
        Self::compensate(ctx, order).await?;
        Self::reach(ctx, "cancelled");
        Err(WorkflowTermination::cancelled())
    }

    /// Cancels at the cafe and refunds (both survive a workflow cancellation).
    async fn compensate(ctx: &WorkflowContext<Self>, order: &Order) -> WorkflowResult<()> {
        ctx.execute_activity(
            Pizza::cancel_at_cafe,
            order.clone(),
            detached(quick_retries()),
        )
        .await?;
        ctx.execute_activity(
            Pizza::refund_payment,
            order.clone(),
            detached(quick_retries()),
        )
        .await?;
        Ok(())
    }
}

#[workflow_methods]
impl PizzaOrder {
    #[run(name = "PizzaOrder")]
    pub async fn run(ctx: &mut WorkflowContext<Self>, order: Order) -> WorkflowResult<String> {
        Self::reach(ctx, "taken");
        Self::reach(ctx, "charging");
        let retry = quick_retries();
        // The steps before the pizza leaves run to their end even if the customer cancels
        // meanwhile (a charge cut off halfway would be neither kept nor refunded); the
        // cancellation is then compensated.
        match ctx
            .execute_activity(
                Pizza::charge_payment,
                order.clone(),
                detached(retry.clone()),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if declined(&e) => {
                Self::reach(ctx, "payment_declined");
                return Ok("payment_declined".into());
            }
            Err(e) => return Err(e.into()),
        }
        if Self::cancel_requested(ctx) {
            return Self::cancel_order(ctx, &order).await;
        }
        let workflow_id = ctx.workflow_id().to_string();
        ctx.execute_activity(
            Pizza::send_to_cafe,
            (order.clone(), workflow_id),
            detached(retry.clone()),
        )
        .await?;
        if Self::cancel_requested(ctx) {
            return Self::cancel_order(ctx, &order).await;
        }
        Self::reach(ctx, "cooking");
        let deadline = Duration::from_secs(order.cooking_deadline_secs.max(1));
        let cooked = select! {
            c = ctx.wait_condition(|s| s.cooked) => c.is_ok(),
            t = ctx.timer(deadline) => {
                if t == TimerResult::Fired {
                    // The cafe never cooked it: cancel there and refund.
                    Self::compensate(ctx, &order).await?;
                    Self::reach(ctx, "refunded");
                    return Ok("refunded".into());
                }
                false
            }
        };
        if !cooked {
            // The customer cancelled before pickup.
            return Self::cancel_order(ctx, &order).await;
        }
        // On its way: a cancellation no longer stops the delivery.
        Self::reach(ctx, "delivering");
        let courier_opts = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(60))
            .retry_policy(retry.clone())
            .heartbeat_timeout(Duration::from_secs(2))
            .cancellation_token(WorkflowCancellationToken::new())
            .build();
        let courier = ctx
            .execute_activity(Pizza::dispatch_courier, order.clone(), courier_opts)
            .await?;
        ctx.state_mut(|s| s.status.courier = Some(courier));
        // Version 2: loyalty points, for delivered orders only.
        if ctx.patched("loyalty-points") {
            ctx.execute_activity(Pizza::award_loyalty_points, order.clone(), detached(retry))
                .await?;
        }
        Self::reach(ctx, "delivered");
        Ok("delivered".into())
    }

    /// The cafe: the pizza is cooked.
    #[signal(name = "cafe_ready")]
    pub fn cafe_ready(&mut self, _ctx: &mut SyncWorkflowContext<Self>) {
        self.cooked = true;
    }

    /// Stage, stage times, courier and tip.
    #[query(name = "status")]
    pub fn status(&self, _ctx: &WorkflowContextView) -> Status {
        self.status.clone()
    }

    /// Adds a tip (cents); answers the total.
    #[update(name = "add_tip")]
    pub fn add_tip(&mut self, _ctx: &mut SyncWorkflowContext<Self>, cents: u64) -> u64 {
        self.status.tip_cents += cents;
        self.status.tip_cents
    }

    #[update_validator(add_tip)]
    pub fn validate_tip(
        &self,
        _ctx: &WorkflowContextView,
        cents: &u64,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if *cents == 0 || *cents > MAX_TIP_CENTS {
            return Err(format!("a tip must be between 1 and {MAX_TIP_CENTS} cents").into());
        }
        Ok(())
    }
}

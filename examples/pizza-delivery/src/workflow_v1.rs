//! Version 1 of `PizzaOrder`, as first deployed (before loyalty points): kept so that tests can
//! record version-1 histories and replay them against the current code.
use std::time::{Duration, UNIX_EPOCH};

use temporalio_sdk::workflows::{select, workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, SyncWorkflowContext, TimerResult, WorkflowCancellationToken, WorkflowContext,
    WorkflowContextView, WorkflowResult, WorkflowTermination,
};

use crate::activities::Pizza;
use crate::model::{Order, Status};
use crate::workflow::{MAX_TIP_CENTS, declined, detached, options, quick_retries};

/// The workflow's state: what the query reports, and whether the cafe said "cooked".
#[workflow]
#[derive(Default)]
pub struct PizzaOrderV1 {
    status: Status,
    cooked: bool,
}

impl PizzaOrderV1 {
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
impl PizzaOrderV1 {
    #[run(name = "PizzaOrder")]
    pub async fn run(ctx: &mut WorkflowContext<Self>, order: Order) -> WorkflowResult<String> {
        Self::reach(ctx, "taken");
        Self::reach(ctx, "charging");
        let retry = quick_retries();
        match ctx
            .execute_activity(Pizza::charge_payment, order.clone(), options(retry.clone()))
            .await
        {
            Ok(_) => {}
            Err(e) if declined(&e) => {
                Self::reach(ctx, "payment_declined");
                return Ok("payment_declined".into());
            }
            Err(e) => return Err(e.into()),
        }
        Self::reach(ctx, "cooking");
        let workflow_id = ctx.workflow_id().to_string();
        ctx.execute_activity(
            Pizza::send_to_cafe,
            (order.clone(), workflow_id),
            options(retry.clone()),
        )
        .await?;
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
            Self::compensate(ctx, &order).await?;
            Self::reach(ctx, "cancelled");
            return Err(WorkflowTermination::cancelled());
        }
        // On its way: a cancellation no longer stops the delivery.
        Self::reach(ctx, "delivering");
        let courier_opts = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(60))
            .retry_policy(retry)
            .heartbeat_timeout(Duration::from_secs(2))
            .cancellation_token(WorkflowCancellationToken::new())
            .build();
        let courier = ctx
            .execute_activity(Pizza::dispatch_courier, order.clone(), courier_opts)
            .await?;
        ctx.state_mut(|s| s.status.courier = Some(courier));
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

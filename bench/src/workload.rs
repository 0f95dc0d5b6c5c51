//! The benchmark workload: one workflow type that runs K activities in sequence, T short timers
//! and waits for S signals, and the activity it calls. The same code runs against any server.
use std::time::Duration;

use serde::{Deserialize, Serialize};
use temporalio_sdk::activities::{ActivityContext, ActivityError, activities};
use temporalio_sdk::workflows::{workflow, workflow_methods};
use temporalio_sdk::{ActivityOptions, SyncWorkflowContext, WorkflowContext, WorkflowResult};

/// What one benchmark workflow does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchInput {
    pub activities: u32,
    pub timers: u32,
    pub signals: u32,
    /// Sent to every activity and returned by it (B bytes).
    pub payload: String,
    /// A final durable sleep, in seconds (0: none).
    #[serde(default)]
    pub sleep_secs: u64,
}

/// The activities of the workload.
#[derive(Default, Clone)]
pub struct BenchActivities;

#[activities]
impl BenchActivities {
    /// Returns its input: the cost measured is the server's, not the activity's.
    #[activity(name = "kairos_bench_echo")]
    async fn echo(_ctx: ActivityContext, payload: String) -> Result<String, ActivityError> {
        Ok(payload)
    }
}

#[workflow]
#[derive(Default)]
pub struct BenchWorkflow {
    signals_seen: u32,
}

#[workflow_methods]
impl BenchWorkflow {
    #[run(name = "kairos_bench")]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: BenchInput) -> WorkflowResult<u32> {
        let mut payload = input.payload;
        for _ in 0..input.activities {
            payload = ctx
                .execute_activity(
                    BenchActivities::echo,
                    payload,
                    ActivityOptions::start_to_close_timeout(Duration::from_secs(60)),
                )
                .await?;
        }
        for _ in 0..input.timers {
            ctx.timer(Duration::from_millis(10)).await;
        }
        if input.sleep_secs > 0 {
            ctx.timer(Duration::from_secs(input.sleep_secs)).await;
        }
        let wanted = input.signals;
        if wanted > 0 {
            ctx.wait_condition(|s| s.signals_seen >= wanted).await?;
        }
        Ok(input.activities)
    }

    #[signal(name = "kairos_bench_signal")]
    pub fn signal(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _n: u32) {
        self.signals_seen += 1;
    }
}

/// State transitions one workflow causes, counted as the server's history transactions:
/// the start, two per workflow task (started, completed), two per activity (started,
/// completed), one per timer fired and one per signal. Sequential steps need one workflow task
/// each, plus the first; signals may share tasks, so they are counted as one task each at most.
pub fn transitions_per_workflow(activities: u32, timers: u32, signals: u32) -> u64 {
    let (a, t, s) = (activities as u64, timers as u64, signals as u64);
    let workflow_tasks = 1 + a + t + s;
    1 + 2 * workflow_tasks + 2 * a + t + s
}

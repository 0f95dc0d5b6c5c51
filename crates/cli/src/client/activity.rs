//! `kairos activity ...`: complete or fail an activity by its workflow and activity id.
use super::*;

#[derive(Subcommand)]
pub enum ActivityCommand {
    /// Complete an activity with a result.
    Complete {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        activity_id: String,
        /// JSON result.
        #[arg(long)]
        result: String,
    },
    /// Fail an activity.
    Fail {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        activity_id: String,
        #[arg(long, default_value = "")]
        reason: String,
        /// JSON details.
        #[arg(long)]
        detail: Option<String>,
    },
}

impl Client {
    pub async fn activity(&mut self, command: ActivityCommand) -> anyhow::Result<()> {
        match command {
            ActivityCommand::Complete {
                target,
                activity_id,
                result,
            } => {
                self.wf
                    .respond_activity_task_completed_by_id(
                        ws::RespondActivityTaskCompletedByIdRequest {
                            namespace: self.namespace.clone(),
                            workflow_id: target.workflow_id.clone(),
                            run_id: target.run_id.clone(),
                            activity_id,
                            result: payloads(&[result])?,
                            identity: identity(),
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(rpc("unable to complete activity"))?;
                println!("Activity completed");
            }
            ActivityCommand::Fail {
                target,
                activity_id,
                reason,
                detail,
            } => {
                use temporalio_protos::temporal::api::failure::v1::{
                    ApplicationFailureInfo, Failure, failure,
                };
                let details = detail.map(|d| payloads(&[d])).transpose()?.flatten();
                self.wf
                    .respond_activity_task_failed_by_id(ws::RespondActivityTaskFailedByIdRequest {
                        namespace: self.namespace.clone(),
                        workflow_id: target.workflow_id.clone(),
                        run_id: target.run_id.clone(),
                        activity_id,
                        failure: Some(Failure {
                            message: reason,
                            source: "CLI".into(),
                            failure_info: Some(failure::FailureInfo::ApplicationFailureInfo(
                                ApplicationFailureInfo {
                                    details,
                                    ..Default::default()
                                },
                            )),
                            ..Default::default()
                        }),
                        identity: identity(),
                        ..Default::default()
                    })
                    .await
                    .map_err(rpc("unable to fail activity"))?;
                println!("Activity failed");
            }
        }
        Ok(())
    }
}

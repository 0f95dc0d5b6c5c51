//! Tests that run the real `kairos` binary as a subprocess: start-up, and SIGKILL crashes of the
//! server and of a worker process in the middle of a workflow.
mod crash;

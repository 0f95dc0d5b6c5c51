//! Tests that run the real `kairos` binary as a subprocess: start-up flags and errors, the
//! database file's safety, hostile requests, and SIGKILL crashes of the server in the middle of
//! a workflow.
mod crash;
mod flags;
mod robustness;
mod support;

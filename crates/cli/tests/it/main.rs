//! Tests that run the real `kairos` binary as a subprocess: start-up flags and errors, the
//! database file's safety, hostile requests, SIGKILL crashes of the server in the middle of a
//! workflow, and task starts answered before they are synced.
mod cluster;
mod crash;
mod flags;
mod nodes;
mod robustness;
mod support;
mod task_starts;

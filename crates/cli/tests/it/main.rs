//! Tests that run the real `kairos` binary as a subprocess: start-up flags and errors, the
//! database file's safety, hostile requests, SIGKILL crashes of the server in the middle of a
//! workflow, task starts answered before they are synced, and clusters of `kairos server start`
//! nodes (losing a node, a rolling restart, roles).
mod cancelled;
mod cluster;
mod crash;
mod fencing;
mod flags;
mod heartbeats;
mod nodes;
mod robustness;
mod roles;
mod rolling;
mod support;
mod task_starts;

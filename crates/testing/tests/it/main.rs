//! End-to-end tests: official Rust SDK workers and clients against an in-process Kairos.
mod children;
mod continue_as_new;
mod decoders;
mod handoff;
mod long_poll;
mod postgres;
mod reset;
mod signals;
mod support;
mod surface;
mod tidy;
mod updates;
mod versioning;
mod workers;
mod workflows;

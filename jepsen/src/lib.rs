//! Wharf's fault-injection harness, in the spirit of Jepsen: clients in
//! every region record a history of operations, nemeses inject faults,
//! and checkers judge the history against the consistency promises of
//! DESIGN.md.

pub mod client;
pub mod cluster;
pub mod gc;
pub mod history;
pub mod linearizable;
pub mod local;
pub mod nemesis;
pub mod run;

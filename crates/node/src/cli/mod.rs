//! The admin verbs: a client of the management API.

pub mod client;
pub mod drill;
pub mod identity;
pub mod login;
pub mod output;
pub mod registry;
pub mod replication;
pub mod repository;

//! Webhook delivery. Events are written by the state machine into a
//! replicated outbox (see `wharf_meta`'s `webhooks`); this crate drains it.
//!
//! One deliverer runs, on the Raft leader: its state machine is never
//! behind the log, so it sees an event as soon as the push that caused it
//! is acknowledged, and the attempts it records commit without a
//! forwarding hop. When leadership moves, the new leader's deliverer picks
//! up from the replicated queue: events whose attempts were not yet
//! recorded are sent again, with the same id (at-least-once).
//!
//! Each webhook with pending events has its own worker, which sends them in
//! order (a failing head waits out its backoff before the next is tried),
//! so a slow, failing or hanging endpoint delays only its own webhook,
//! never another's, and never a push: the push committed before its event
//! was ever looked at.

mod deliverer;
pub mod payload;

pub use deliverer::{backoff, Deliverer, Settings, Stats};

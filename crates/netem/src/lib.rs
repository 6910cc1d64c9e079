//! User-space network emulation (`tc netem` is not available everywhere):
//! a TCP proxy per directed link that delays, throttles, "loses" and cuts
//! traffic, with settings changeable while connections are open. `wharf up`
//! puts one between every pair of regions to emulate a WAN; the
//! fault-injection harness uses the same links to cut, slow and flap them.

mod limiter;
mod link;

pub use limiter::RateLimiter;
pub use link::{Link, LinkSpec};

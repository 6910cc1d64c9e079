//! The management API (JSON over HTTP) behind the `wharf` admin verbs.
//! Listings are linearizable: each starts with a read barrier, so what an
//! operator sees includes every write acknowledged before the request.

mod images;
mod replications;
mod repositories;

use axum::routing::get;
use axum::Router;

use crate::state::App;

pub fn router() -> Router<App> {
    Router::new()
        .route("/status", get(repositories::status))
        .route(
            "/repositories",
            get(repositories::list).delete(repositories::delete),
        )
        .route("/repositories/tags", get(repositories::tags))
        .route("/repositories/manifests", get(repositories::manifests))
        .route("/images", get(images::show).delete(images::delete))
        .route(
            "/replications",
            get(replications::list)
                .post(replications::create)
                .delete(replications::delete),
        )
}

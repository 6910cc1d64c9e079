//! The management API (JSON over HTTP) behind the `wharf` admin verbs.
//! Listings are linearizable: each starts with a read barrier, so what an
//! operator sees includes every write acknowledged before the request.

mod fence;
mod gc;
mod identities;
mod images;
mod lifecycle;
pub(crate) mod registries;
mod replications;
mod repositories;
mod runs;
pub(crate) mod tasks;
mod webhooks;

use axum::routing::{get, patch, post};
use axum::Router;

use crate::state::App;

pub fn router() -> Router<App> {
    Router::new()
        .route("/status", get(repositories::status))
        .route(
            "/repositories",
            get(repositories::list)
                .patch(repositories::update)
                .delete(repositories::delete),
        )
        .route("/repositories/show", get(repositories::show))
        .route("/repositories/tags", get(repositories::tags))
        .route("/repositories/manifests", get(repositories::manifests))
        .route("/images", get(images::show).delete(images::delete))
        .route(
            "/users",
            get(identities::list_users).post(identities::create_user),
        )
        .route(
            "/users/:name",
            patch(identities::update_user).delete(identities::delete_user),
        )
        .route(
            "/roles",
            post(identities::assign_role).delete(identities::remove_role),
        )
        .route(
            "/scope-maps",
            get(identities::list_scope_maps).put(identities::put_scope_map),
        )
        .route(
            "/scope-maps/:name",
            axum::routing::delete(identities::delete_scope_map),
        )
        .route(
            "/tokens",
            get(identities::list_tokens).post(identities::create_token),
        )
        .route(
            "/tokens/:name",
            patch(identities::update_token).delete(identities::delete_token),
        )
        .route(
            "/credential",
            get(identities::show_credential).patch(identities::update_credential),
        )
        .route("/signing-keys/rotate", post(identities::rotate_signing_key))
        .route(
            "/access",
            get(identities::get_access).put(identities::put_access),
        )
        .route(
            "/fence",
            get(fence::show).put(fence::set).delete(fence::lift),
        )
        .route(
            "/registries",
            get(registries::list).post(registries::create),
        )
        .route("/registries/check-name", get(registries::check_name))
        .route("/registries/:name/usage", get(registries::usage))
        .route(
            "/registries/:name/network-rules",
            get(registries::network_rules)
                .post(registries::add_network_rule)
                .delete(registries::remove_network_rule),
        )
        .route(
            "/registries/:name/replications",
            get(registries::list_replications)
                .post(registries::create_replication)
                .delete(registries::delete_replication),
        )
        .route(
            "/registries/:name",
            get(registries::show)
                .patch(registries::update)
                .delete(registries::delete),
        )
        .route(
            "/policies",
            get(lifecycle::show_policies).patch(lifecycle::update_policy),
        )
        .route(
            "/policies/keep",
            axum::routing::put(lifecycle::put_keep_rule).delete(lifecycle::remove_keep_rule),
        )
        .route("/deleted", get(lifecycle::list_deleted))
        .route(
            "/deleted/repositories",
            get(lifecycle::list_deleted_repositories),
        )
        .route("/deleted/restore", post(lifecycle::restore))
        .route("/gc", get(gc::status))
        .route("/gc/runs", post(gc::run))
        .route("/scrub", get(gc::scrub_status))
        .route("/runs", get(runs::list).post(runs::queue))
        .route("/runs/limits", get(runs::limits))
        .route("/runs/:id", get(runs::show))
        .route("/runs/:id/cancel", post(runs::cancel))
        .route("/runs/:id/log", get(runs::log))
        .route("/tasks", get(tasks::list).post(tasks::create))
        .route(
            "/tasks/:name",
            get(tasks::show).patch(tasks::update).delete(tasks::delete),
        )
        .route("/tasks/:name/run", post(tasks::run))
        .route("/secrets", get(tasks::list_secrets))
        .route(
            "/secrets/:name",
            axum::routing::put(tasks::put_secret).delete(tasks::delete_secret),
        )
        .route("/tasks/:name/timers", post(tasks::add_timer))
        .route(
            "/tasks/:name/timers/:timer",
            patch(tasks::update_timer).delete(tasks::remove_timer),
        )
        .route("/webhooks", get(webhooks::list).post(webhooks::create))
        .route(
            "/webhooks/:name",
            get(webhooks::show)
                .patch(webhooks::update)
                .delete(webhooks::delete),
        )
        .route("/webhooks/:name/config", get(webhooks::config))
        .route("/webhooks/:name/ping", post(webhooks::ping))
        .route("/webhooks/:name/events", get(webhooks::events))
        .route("/webhooks/:name/redeliver", post(webhooks::redeliver))
        .route(
            "/replications",
            get(replications::list)
                .post(replications::create)
                .delete(replications::delete),
        )
}

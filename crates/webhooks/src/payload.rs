//! What a webhook is sent: the cloud registry's event JSON or a CloudEvents
//! 1.0 structured event, and the body's signature.

use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use wharf_meta::{Event, EventFormat, WebhookAction};

/// The header carrying `sha256=<hex HMAC-SHA256 of the body>` when the
/// webhook has a secret.
pub const SIGNATURE_HEADER: &str = "x-wharf-signature-256";
/// The event id, for receivers that deduplicate (delivery is at least once).
pub const EVENT_ID_HEADER: &str = "x-wharf-event-id";

/// RFC 3339 in UTC with milliseconds.
pub fn timestamp(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The CloudEvents `type` of an action.
pub fn cloudevent_type(action: WebhookAction) -> &'static str {
    match action {
        WebhookAction::Push => "wharf.image.pushed",
        WebhookAction::Delete => "wharf.image.deleted",
        WebhookAction::ChartPush => "wharf.chart.pushed",
        WebhookAction::ChartDelete => "wharf.chart.deleted",
        WebhookAction::Quarantine => "wharf.image.quarantined",
        WebhookAction::Replicated => "wharf.image.replicated",
        WebhookAction::Ping => "wharf.webhook.ping",
    }
}

/// The cloud registry's payload: `{id, timestamp, action, target, request}`
/// (plus `region` for `replicated`). Empty fields are left out, as the cloud
/// registry does for a repository delete's target.
pub fn event_json(e: &Event) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(e.id));
    out.insert("timestamp".into(), json!(timestamp(e.at_ms)));
    out.insert("action".into(), json!(e.action.as_str()));
    if e.action != WebhookAction::Ping {
        let t = &e.target;
        let mut target = Map::new();
        if !t.media_type.is_empty() {
            target.insert("mediaType".into(), json!(t.media_type));
        }
        if !t.digest.is_empty() {
            target.insert("size".into(), json!(t.size));
            target.insert("digest".into(), json!(t.digest));
            target.insert("length".into(), json!(t.size));
        }
        target.insert("repository".into(), json!(t.repository));
        if let Some(tag) = &t.tag {
            target.insert("tag".into(), json!(tag));
        }
        out.insert("target".into(), Value::Object(target));
    }
    if let Some(r) = &e.request {
        out.insert(
            "request".into(),
            json!({"id": r.id, "host": r.host, "method": r.method, "useragent": r.useragent}),
        );
    }
    if let Some(region) = &e.region {
        out.insert("region".into(), json!(region));
    }
    Value::Object(out)
}

/// The body and its content type.
pub fn body(e: &Event, format: EventFormat) -> (Vec<u8>, &'static str) {
    let data = event_json(e);
    match format {
        EventFormat::Default => (data.to_string().into_bytes(), "application/json"),
        EventFormat::Cloudevents => {
            let mut ce = json!({
                "specversion": "1.0",
                "id": e.id,
                "source": format!("/registries/{}", e.registry),
                "type": cloudevent_type(e.action),
                "time": timestamp(e.at_ms),
                "datacontenttype": "application/json",
                "data": data,
            });
            if !e.target.repository.is_empty() {
                let subject = match &e.target.tag {
                    Some(t) => format!("{}:{t}", e.target.repository),
                    None => e.target.repository.clone(),
                };
                ce["subject"] = json!(subject);
            }
            (ce.to_string().into_bytes(), "application/cloudevents+json")
        }
    }
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_meta::{EventTarget, Origin};

    fn push() -> Event {
        Event {
            id: "5d0f5a0c-1111-2222-3333-444455556666".into(),
            seq: 7,
            at_ms: 1_764_720_000_123,
            action: WebhookAction::Push,
            registry: "default".into(),
            target: EventTarget {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                size: 708,
                digest: "sha256:abc".into(),
                repository: "team/app".into(),
                tag: Some("v1".into()),
            },
            request: Some(Origin {
                id: "req-1".into(),
                host: "registry.example".into(),
                method: "PUT".into(),
                useragent: "docker/27".into(),
            }),
            region: None,
        }
    }

    #[test]
    fn the_default_payload_has_the_cloud_registrys_fields() {
        let v = event_json(&push());
        assert_eq!(v["action"], "push");
        assert_eq!(v["timestamp"], "2025-12-03T00:00:00.123Z");
        assert_eq!(v["target"]["size"], 708);
        assert_eq!(v["target"]["length"], 708);
        assert_eq!(v["target"]["tag"], "v1");
        assert_eq!(v["request"]["useragent"], "docker/27");
        assert!(v.get("region").is_none());
    }

    #[test]
    fn cloudevents_wrap_the_payload_with_a_type_and_subject() {
        let (b, ct) = body(&push(), EventFormat::Cloudevents);
        assert_eq!(ct, "application/cloudevents+json");
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "wharf.image.pushed");
        assert_eq!(v["subject"], "team/app:v1");
        assert_eq!(v["data"]["target"]["digest"], "sha256:abc");
    }

    #[test]
    fn the_signature_is_rfc_4231s_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}

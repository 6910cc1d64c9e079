//! Manifest parsing and validation: OCI image manifests and indexes, Docker
//! schema2 manifests and manifest lists, and artifacts (`artifactType`,
//! `subject`). The raw bytes are never re-serialized: callers store exactly
//! what the client sent, and this module only extracts what the registry
//! must check (referenced blobs and child manifests) and index (subject).

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::digest::Digest;
use crate::media;

/// Manifests larger than this are refused (the spec allows registries to
/// set a limit; 4 MiB is what common registries use).
pub const MANIFEST_MAX_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest is {0} bytes; the limit is {MANIFEST_MAX_BYTES}")]
    TooLarge(usize),
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("manifest mediaType {body:?} does not match Content-Type {header:?}")]
    MediaTypeMismatch { body: String, header: String },
    #[error("manifest schemaVersion must be 2")]
    SchemaVersion,
    #[error("manifest is missing the {0} field")]
    Missing(&'static str),
    #[error("invalid descriptor: {0}")]
    Descriptor(String),
}

/// The fields of a descriptor that the registry uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    /// Foreign layers (with `urls`) live outside the registry and are not
    /// required to be present, as in the reference registry.
    pub fn is_foreign(&self) -> bool {
        !self.urls.is_empty()
    }
}

/// What the registry keeps from a parsed manifest besides its raw bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedManifest {
    pub media_type: String,
    /// Config and layers of an image manifest (blobs that must exist).
    pub blobs: Vec<Descriptor>,
    /// Children of an index (manifests that must exist in the repository).
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    /// `artifactType`, or for image manifests without one the config's media
    /// type, as the referrers API reports it.
    pub artifact_type: Option<String>,
    /// The manifest's annotations, reported by the referrers API.
    pub annotations: Option<Map<String, Value>>,
}

fn descriptor(v: &Value, what: &str) -> Result<Descriptor, ManifestError> {
    serde_json::from_value(v.clone()).map_err(|e| ManifestError::Descriptor(format!("{what}: {e}")))
}

fn descriptors(v: Option<&Value>, what: &'static str) -> Result<Vec<Descriptor>, ManifestError> {
    match v {
        None | Some(Value::Null) => Err(ManifestError::Missing(what)),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, d)| descriptor(d, &format!("{what}[{i}]")))
            .collect(),
        Some(_) => Err(ManifestError::Descriptor(format!(
            "{what} must be an array"
        ))),
    }
}

/// Parse and validate a manifest sent with the given Content-Type header.
pub fn parse(raw: &[u8], content_type: Option<&str>) -> Result<ParsedManifest, ManifestError> {
    if raw.len() > MANIFEST_MAX_BYTES {
        return Err(ManifestError::TooLarge(raw.len()));
    }
    let doc: Value = serde_json::from_slice(raw).map_err(|e| ManifestError::Json(e.to_string()))?;
    let obj = doc
        .as_object()
        .ok_or_else(|| ManifestError::Json("top level must be an object".into()))?;

    // Content-Type may carry parameters; only the type itself matters.
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim().to_string())
        .filter(|c| media::MANIFEST_TYPES.contains(&c.as_str()));
    let body = obj
        .get("mediaType")
        .and_then(Value::as_str)
        .map(str::to_string);
    let media_type = match (&body, &header) {
        (Some(b), Some(h)) if b != h => {
            return Err(ManifestError::MediaTypeMismatch {
                body: b.clone(),
                header: h.clone(),
            })
        }
        (Some(b), _) => b.clone(),
        (None, Some(h)) => h.clone(),
        (None, None) if obj.contains_key("manifests") => media::OCI_INDEX.to_string(),
        (None, None) => media::OCI_MANIFEST.to_string(),
    };
    if !media::MANIFEST_TYPES.contains(&media_type.as_str()) {
        return Err(ManifestError::UnsupportedMediaType(media_type));
    }
    if obj.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
        return Err(ManifestError::SchemaVersion);
    }

    let subject = match obj.get("subject") {
        None | Some(Value::Null) => None,
        Some(v) => Some(descriptor(v, "subject")?),
    };
    let declared_artifact_type = obj
        .get("artifactType")
        .and_then(Value::as_str)
        .map(str::to_string);
    let annotations = obj.get("annotations").and_then(Value::as_object).cloned();

    let (blobs, manifests, artifact_type) = if media::is_index(&media_type) {
        let manifests = descriptors(obj.get("manifests"), "manifests")?;
        (Vec::new(), manifests, declared_artifact_type)
    } else {
        let config = descriptor(
            obj.get("config").ok_or(ManifestError::Missing("config"))?,
            "config",
        )?;
        let layers = descriptors(obj.get("layers"), "layers")?;
        let artifact_type = declared_artifact_type.or_else(|| Some(config.media_type.clone()));
        let mut blobs = vec![config];
        blobs.extend(layers);
        (blobs, Vec::new(), artifact_type)
    };
    Ok(ParsedManifest {
        media_type,
        blobs,
        manifests,
        subject,
        artifact_type,
        annotations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":10}}]{extra}}}"#,
            media::OCI_MANIFEST,
            d('a'),
            d('b')
        )
    }

    #[test]
    fn image_manifest_lists_config_and_layers_as_blobs() {
        let p = parse(image("").as_bytes(), Some(media::OCI_MANIFEST)).unwrap();
        assert_eq!(p.media_type, media::OCI_MANIFEST);
        assert_eq!(p.blobs.len(), 2);
        assert_eq!(p.blobs[1].size, 10);
        assert_eq!(
            p.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        assert!(p.subject.is_none());
    }

    #[test]
    fn subject_and_artifact_type_are_extracted() {
        let extra = format!(
            r#","artifactType":"application/x-sig","subject":{{"mediaType":"{}","digest":"{}","size":5}},"annotations":{{"k":"v"}}"#,
            media::OCI_MANIFEST,
            d('c')
        );
        let p = parse(image(&extra).as_bytes(), None).unwrap();
        assert_eq!(p.artifact_type.as_deref(), Some("application/x-sig"));
        assert_eq!(p.subject.unwrap().digest.to_string(), d('c'));
        assert_eq!(p.annotations.unwrap()["k"], "v");
    }

    #[test]
    fn index_lists_child_manifests() {
        let raw = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{}","size":7,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            media::DOCKER_MANIFEST_LIST,
            media::DOCKER_MANIFEST,
            d('e')
        );
        let p = parse(raw.as_bytes(), Some(media::DOCKER_MANIFEST_LIST)).unwrap();
        assert!(p.blobs.is_empty());
        assert_eq!(p.manifests.len(), 1);
    }

    #[test]
    fn refuses_invalid_manifests() {
        assert!(matches!(parse(b"{", None), Err(ManifestError::Json(_))));
        assert!(matches!(parse(b"[]", None), Err(ManifestError::Json(_))));
        assert_eq!(
            parse(br#"{"schemaVersion":1}"#, None),
            Err(ManifestError::SchemaVersion)
        );
        assert_eq!(
            parse(br#"{"schemaVersion":2}"#, None),
            Err(ManifestError::Missing("config"))
        );
        let bad_digest = image("").replace(&d('b'), "sha256:nothex");
        assert!(matches!(
            parse(bad_digest.as_bytes(), None),
            Err(ManifestError::Descriptor(_))
        ));
        assert!(matches!(
            parse(image("").as_bytes(), Some(media::DOCKER_MANIFEST)),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        let schema1 = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"}"#;
        assert!(matches!(
            parse(schema1, None),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
        let big = vec![b' '; MANIFEST_MAX_BYTES + 1];
        assert_eq!(
            parse(&big, None),
            Err(ManifestError::TooLarge(MANIFEST_MAX_BYTES + 1))
        );
    }
}

//! Repository names and references, per the grammar of the OCI Distribution
//! Spec v1.1 ("Pulling manifests" / "Definitions").

use std::fmt;

use crate::digest::{Digest, DigestError};

/// Longest repository name accepted. The spec advises clients to keep
/// `host/name` under 256 characters; the name alone is bounded the same way.
pub const REPOSITORY_NAME_MAX_BYTES: usize = 255;
/// Longest tag (the grammar allows 128 characters).
pub const TAG_MAX_BYTES: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("invalid repository name {0:?}: components of [a-z0-9] separated by '.', '_', '__' or '-', joined by '/'")]
    Repository(String),
    #[error("invalid tag {0:?}: must match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    Tag(String),
    #[error("invalid digest: {0}")]
    Digest(#[from] DigestError),
    #[error("invalid registry name {0:?}: 5 to 50 letters and digits")]
    Registry(String),
}

/// Registry names: 5 to 50 ASCII letters and digits, unique whatever their
/// case (as the cloud registry requires); the lower-case form is the name.
pub const REGISTRY_NAME_MIN_BYTES: usize = 5;
pub const REGISTRY_NAME_MAX_BYTES: usize = 50;

/// A registry's name in its canonical (lower-case) form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistryName(String);

impl RegistryName {
    pub fn parse(s: &str) -> Result<RegistryName, NameError> {
        let ok = (REGISTRY_NAME_MIN_BYTES..=REGISTRY_NAME_MAX_BYTES).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err(NameError::Registry(s.to_string()));
        }
        Ok(RegistryName(s.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RegistryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_lower_alnum(b[0]) || !is_lower_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_lower_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__', or one or more '-'.
        let start = i;
        while i < b.len() && !is_lower_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

pub fn validate_repository(name: &str) -> Result<(), NameError> {
    if name.is_empty()
        || name.len() > REPOSITORY_NAME_MAX_BYTES
        || !name.split('/').all(valid_component)
    {
        return Err(NameError::Repository(name.to_string()));
    }
    Ok(())
}

pub fn validate_tag(tag: &str) -> Result<(), NameError> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= TAG_MAX_BYTES
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-');
    if ok {
        Ok(())
    } else {
        Err(NameError::Tag(tag.to_string()))
    }
}

/// The `<reference>` of `/v2/<name>/manifests/<reference>`: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    /// A reference containing ':' is a digest; anything else must be a tag.
    pub fn parse(s: &str) -> Result<Reference, NameError> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            validate_tag(s)?;
            Ok(Reference::Tag(s.to_string()))
        }
    }
}

/// Split an image name, `repo:tag` or `repo@digest`, into its repository
/// and reference (unchecked); a bare `repo` means `repo:latest`. A `:`
/// before the last `/` belongs to a registry host, not a tag.
pub fn split_image(image: &str) -> (&str, &str) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo, digest);
    }
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[slash..].rfind(':') {
        Some(i) => (&image[..slash + i], &image[slash + i + 1..]),
        None => (image, "latest"),
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => write!(f, "{d}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_split_into_repository_and_reference() {
        assert_eq!(split_image("team/app:v1"), ("team/app", "v1"));
        assert_eq!(split_image("team/app"), ("team/app", "latest"));
        assert_eq!(split_image("app@sha256:ab"), ("app", "sha256:ab"));
        assert_eq!(split_image("host:5000/app"), ("host:5000/app", "latest"));
    }

    #[test]
    fn accepts_names_of_the_spec_grammar() {
        for n in [
            "a",
            "library/ubuntu",
            "team/app/api",
            "a.b_c__d---e/f0",
            "x-y/z.w",
            "0/1/2",
        ] {
            assert_eq!(validate_repository(n), Ok(()), "{n}");
        }
    }

    #[test]
    fn rejects_names_outside_the_grammar() {
        let long = "a".repeat(REPOSITORY_NAME_MAX_BYTES + 1);
        for n in [
            "",
            "A",
            "a//b",
            "/a",
            "a/",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "a_.b",
            "a b",
            "ä",
            long.as_str(),
        ] {
            assert!(validate_repository(n).is_err(), "{n:?} should be invalid");
        }
    }

    #[test]
    fn tags_follow_the_grammar() {
        assert!(validate_tag("v1.0_rc-1").is_ok());
        assert!(validate_tag("_x").is_ok());
        assert!(validate_tag(&"a".repeat(128)).is_ok());
        assert!(validate_tag(&"a".repeat(129)).is_err());
        assert!(validate_tag(".x").is_err());
        assert!(validate_tag("-x").is_err());
        assert!(validate_tag("").is_err());
        assert!(validate_tag("a/b").is_err());
    }

    #[test]
    fn reference_is_digest_when_it_has_a_colon() {
        let d = format!("sha256:{}", "b".repeat(64));
        assert!(matches!(Reference::parse(&d), Ok(Reference::Digest(_))));
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        assert!(Reference::parse("sha256:zz").is_err());
    }

    #[test]
    fn registry_names_are_five_to_fifty_alphanumerics_in_any_case() {
        assert_eq!(
            RegistryName::parse("TeamOne1").unwrap().as_str(),
            "teamone1"
        );
        assert_eq!(
            RegistryName::parse("teamone1"),
            RegistryName::parse("TEAMONE1")
        );
        for bad in [
            "four",
            "team-one",
            "team.one",
            "team one",
            "",
            &"a".repeat(51),
        ] {
            assert!(RegistryName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(RegistryName::parse(&"a".repeat(50)).is_ok());
    }
}

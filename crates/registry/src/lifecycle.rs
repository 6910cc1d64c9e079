//! Retention and soft-delete policies, and restores from the recycle bin,
//! as requests meet them (the rules are the state machine's: see
//! `wharf_meta`'s `lifecycle` module).

use wharf_consensus::now_unix_ms;
use wharf_meta::{Command, KeepRule, LifecycleCommand, PolicyKind, RegistryCommand};
use wharf_oci::{validate_repository, ErrorCode, Reference};

use crate::{Handle, ServiceError, ServiceResult};

/// Days a policy may keep: retention 0–365 (0: at the next run), soft
/// delete 1–90 (the cloud registry's bounds).
pub fn days_allowed(kind: PolicyKind) -> std::ops::RangeInclusive<u32> {
    match kind {
        PolicyKind::Retention => 0..=365,
        PolicyKind::SoftDelete => 1..=90,
    }
}

fn bad_request(message: String) -> ServiceError {
    ServiceError::Spec {
        code: ErrorCode::Unsupported,
        message,
        status: Some(400),
    }
}

impl Handle {
    /// Change a policy of this registry; only what is named changes.
    pub async fn set_policy(
        &self,
        kind: PolicyKind,
        enabled: Option<bool>,
        days: Option<u32>,
    ) -> ServiceResult<u64> {
        if enabled.is_none() && days.is_none() {
            return Err(bad_request(
                "nothing to change: give a status or a number of days".into(),
            ));
        }
        if let Some(d) = days {
            let allowed = days_allowed(kind);
            if !allowed.contains(&d) {
                return Err(bad_request(format!(
                    "days must be {} to {}, not {d}",
                    allowed.start(),
                    allowed.end()
                )));
            }
        }
        self.write(Command::Registry(RegistryCommand::SetPolicy {
            name: self.name().to_string(),
            policy: kind,
            enabled,
            days,
        }))
        .await
    }

    /// Add a keep policy for repositories matching `rule.pattern`, or
    /// replace the one with that pattern.
    pub async fn put_keep_rule(&self, rule: KeepRule) -> ServiceResult<u64> {
        wharf_auth::validate_pattern(&rule.pattern)
            .map_err(|e| bad_request(format!("repository pattern: {e}")))?;
        if rule.keep_last.is_none() && rule.untouched_days.is_none() {
            return Err(bad_request(
                "a keep policy needs keep-last, untouched-days or both".into(),
            ));
        }
        if rule.keep_last == Some(0) {
            return Err(bad_request(
                "keep-last must be at least 1 (0 would delete every tag)".into(),
            ));
        }
        if let Some(d) = rule.untouched_days {
            if !(1..=3650).contains(&d) {
                return Err(bad_request(format!(
                    "untouched-days must be 1 to 3650, not {d}"
                )));
            }
        }
        self.write(Command::Registry(RegistryCommand::PutKeepRule {
            name: self.name().to_string(),
            rule,
        }))
        .await
    }

    /// Remove the keep policy of `pattern`.
    pub async fn remove_keep_rule(&self, pattern: &str) -> ServiceResult<u64> {
        let removed = self
            .write(Command::Registry(RegistryCommand::RemoveKeepRule {
                name: self.name().to_string(),
                pattern: pattern.to_string(),
            }))
            .await?;
        if removed == 0 {
            return Err(ServiceError::Spec {
                code: ErrorCode::NameUnknown,
                message: format!("no keep policy for {pattern:?}"),
                status: Some(404),
            });
        }
        Ok(removed)
    }

    /// Restore `reference` (a tag or a digest) of `repo` from the bin, in
    /// every region at once; the number of manifests and tags restored.
    pub async fn restore(&self, repo: &str, reference: &str) -> ServiceResult<u64> {
        validate_repository(repo)?;
        Reference::parse(reference)?;
        let restored = self
            .write(Command::Lifecycle(LifecycleCommand::Restore {
                repo: repo.to_string(),
                reference: reference.to_string(),
                now_ms: now_unix_ms(),
            }))
            .await;
        match restored {
            Err(ServiceError::Refused(wharf_meta::ApplyError::ManifestUnknown)) => {
                Err(ServiceError::spec(
                    ErrorCode::ManifestUnknown,
                    format!("nothing deleted to restore as {repo}:{reference}"),
                ))
            }
            other => other,
        }
    }
}

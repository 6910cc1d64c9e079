//! Network rules: with a registry's default action Deny, only clients
//! whose address falls in one of its IP rules reach its OCI API and token
//! endpoint (the management API stays reachable, so an operator cannot
//! lock themselves out). The client's address is the connection's, or,
//! from a trusted proxy, the nearest untrusted hop of `X-Forwarded-For`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use ipnet::IpNet;
use wharf_oci::ErrorCode;

use crate::http::error::ApiError;

/// One registry's rules, parsed, with its tier (the rate limits' too).
#[derive(Debug)]
pub struct Rules {
    deny: bool,
    allow: Vec<IpNet>,
    pub sku: wharf_meta::Sku,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            deny: false,
            allow: Vec::new(),
            sku: wharf_meta::Sku::Premium,
        }
    }
}

/// Parsed rules per registry, rebuilt when registries change (the
/// store's identity epoch moves with every registry command).
#[derive(Default)]
pub struct RulesCache {
    inner: Mutex<(u64, HashMap<String, Arc<Rules>>)>,
}

impl RulesCache {
    pub fn rules(
        &self,
        meta: &wharf_meta::MetaStore,
        registry: &str,
    ) -> Result<Arc<Rules>, wharf_meta::StoreError> {
        let epoch = meta.identity_epoch();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.0 != epoch {
            *inner = (epoch, HashMap::new());
        }
        if let Some(r) = inner.1.get(registry) {
            return Ok(r.clone());
        }
        let record = meta.registry_record(registry)?;
        let sku = record.as_ref().map_or(wharf_meta::Sku::Premium, |r| r.sku);
        let net = record.map(|r| r.network).unwrap_or_default();
        let rules = Arc::new(Rules {
            deny: net.default_deny,
            // Stored canonical by the service layer; anything else is skipped.
            allow: net.ip_rules.iter().filter_map(|c| c.parse().ok()).collect(),
            sku,
        });
        inner.1.insert(registry.to_string(), rules.clone());
        Ok(rules)
    }
}

/// Parse `trusted_proxies` from the configuration.
pub fn parse_proxies(list: &[String]) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("trusted_proxies: {s:?} is not an address or CIDR"))
        })
        .collect()
}

/// The client's address: `peer`, unless `peer` is a trusted proxy, then
/// the rightmost `X-Forwarded-For` hop that is not one.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(v) = value.to_str() else { return client };
        for hop in v.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !is_trusted(&ip) {
                        return ip;
                    }
                }
                // A hop we cannot read: stop at what we know.
                Err(_) => return client,
            }
        }
    }
    client
}

/// Refuse `ip` unless the rules admit it.
pub fn check(rules: &Rules, registry: &str, ip: IpAddr) -> Result<(), ApiError> {
    if !rules.deny || rules.allow.iter().any(|n| n.contains(&ip)) {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::Denied,
        format!("client {ip} is not allowed by registry {registry}'s network rules"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = parse_proxies(&["10.0.0.0/8".into()]).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.7, 10.0.0.2".parse().unwrap());
        // From the proxy: the nearest untrusted hop.
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("203.0.113.7"));
        // From anyone else: the header is ignored.
        assert_eq!(
            client_ip(ip("198.51.100.1"), &h, &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
        assert!(parse_proxies(&["nope".into()]).is_err());
    }

    #[test]
    fn deny_admits_only_the_rules() {
        let rules = Rules {
            deny: true,
            allow: vec!["127.0.0.1/32".parse().unwrap()],
            ..Rules::default()
        };
        assert!(check(&rules, "r", ip("127.0.0.1")).is_ok());
        let e = check(&rules, "r", ip("127.0.0.2")).unwrap_err();
        assert!(
            e.message.contains("client 127.0.0.2 is not allowed"),
            "{}",
            e.message
        );
        assert!(check(&Rules::default(), "r", ip("127.0.0.2")).is_ok());
    }
}

//! Where callbacks may connect. `callback_allow` / `callback_deny` hold host names and CIDRs;
//! addresses are checked after DNS resolution, and the connection is made only to the
//! addresses that passed (the resolver returns nothing else), so a name that re-resolves to a
//! denied address between check and connect (DNS rebinding) cannot slip through.

use std::net::{IpAddr, SocketAddr};

use futures_util::future::LocalBoxFuture;
use ipnet::IpNet;

/// One allow or deny entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Net(IpNet),
    /// A host name; `.example.com` also matches its subdomains.
    Host(String),
}

impl Rule {
    fn parse(text: &str) -> Rule {
        let text = text.trim();
        if let Ok(net) = text.parse::<IpNet>() {
            return Rule::Net(net);
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Rule::Net(IpNet::from(ip));
        }
        Rule::Host(text.trim_end_matches('.').to_ascii_lowercase())
    }

    fn matches_host(&self, host: &str) -> bool {
        match self {
            Rule::Host(rule) if rule.starts_with('.') => {
                host.ends_with(rule.as_str()) || host == &rule[1..]
            }
            Rule::Host(rule) => host == rule,
            Rule::Net(_) => false,
        }
    }

    fn matches_ip(&self, ip: IpAddr) -> bool {
        match self {
            Rule::Net(net) => net.contains(&canonical(ip)),
            Rule::Host(_) => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses are checked as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// Why a callback may not connect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    Dns(String),
}

/// The callback policy from `[security]`.
#[derive(Debug, Clone, Default)]
pub struct CallbackPolicy {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
}

impl CallbackPolicy {
    pub fn new(allow: &[String], deny: &[String]) -> CallbackPolicy {
        CallbackPolicy {
            allow: allow.iter().map(|s| Rule::parse(s)).collect(),
            deny: deny.iter().map(|s| Rule::parse(s)).collect(),
        }
    }

    /// Keeps the resolved addresses this policy lets `host` reach; an error says why none.
    pub fn filter(
        &self,
        host: &str,
        addrs: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, DestinationError> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if self.deny.iter().any(|r| r.matches_host(&host)) {
            return Err(DestinationError::Denied(format!(
                "{host} is in security.callback_deny"
            )));
        }
        let host_allowed =
            self.allow.is_empty() || self.allow.iter().any(|r| r.matches_host(&host));
        let mut refused = Vec::new();
        let kept: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|addr| {
                let ip = addr.ip();
                let ok = !self.deny.iter().any(|r| r.matches_ip(ip))
                    && (host_allowed || self.allow.iter().any(|r| r.matches_ip(ip)));
                if !ok {
                    refused.push(ip.to_string());
                }
                ok
            })
            .collect();
        if kept.is_empty() {
            let why = if refused.is_empty() {
                return Err(DestinationError::Dns(format!(
                    "{host} did not resolve to any address"
                )));
            } else {
                format!(
                    "{host} resolves to {}, which the callback policy does not allow (security.callback_allow / callback_deny)",
                    refused.join(", ")
                )
            };
            return Err(DestinationError::Denied(why));
        }
        Ok(kept)
    }

    /// Applies the policy to a URL whose host is an IP address. The connector hands such a
    /// host straight to `connect` without asking [`PolicyResolver`], so without this check an
    /// address literal (`http://10.0.0.1/…`) would bypass `callback_deny` and
    /// `callback_allow`. Names are left to the resolver.
    pub fn check_ip_literal(&self, url: &str) -> Result<(), DestinationError> {
        let Ok(parsed) = url::Url::parse(url) else {
            return Ok(());
        };
        let ip = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return Ok(()),
        };
        let port = parsed.port_or_known_default().unwrap_or(0);
        self.filter(&ip.to_string(), vec![SocketAddr::new(ip, port)])
            .map(|_| ())
    }
}

/// An actix-tls resolver that resolves with the system resolver, then applies the policy.
pub struct PolicyResolver {
    pub policy: CallbackPolicy,
}

impl actix_tls::connect::Resolve for PolicyResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> LocalBoxFuture<'a, Result<Vec<SocketAddr>, Box<dyn std::error::Error>>> {
        Box::pin(async move {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, port)],
                Err(_) => tokio::net::lookup_host((bare, port))
                    .await
                    .map_err(|e| DestinationError::Dns(format!("cannot resolve {bare}: {e}")))?
                    .collect(),
            };
            Ok(self.policy.filter(bare, addrs)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        format!("{s}:80").parse().unwrap()
    }

    #[test]
    fn empty_policy_allows_everything() {
        let p = CallbackPolicy::default();
        assert_eq!(p.filter("x", vec![addr("10.0.0.1")]).unwrap().len(), 1);
    }

    #[test]
    fn deny_cidr_holds_against_a_name_that_resolves_into_it() {
        let p = CallbackPolicy::new(&[], &["127.0.0.0/8".into()]);
        let err = p
            .filter("innocent.example", vec![addr("127.0.0.1")])
            .unwrap_err();
        assert!(
            matches!(err, DestinationError::Denied(ref m) if m.contains("127.0.0.1")),
            "{err}"
        );
        // Only the allowed address is kept: the connection goes there and nowhere else.
        let kept = p
            .filter("mixed.example", vec![addr("127.0.0.1"), addr("192.0.2.7")])
            .unwrap();
        assert_eq!(kept, vec![addr("192.0.2.7")]);
    }

    #[test]
    fn deny_host_and_subdomains() {
        let p = CallbackPolicy::new(
            &[],
            &[".internal".into(), "metadata.google.internal".into()],
        );
        assert!(p.filter("db.internal", vec![addr("192.0.2.1")]).is_err());
        assert!(p.filter("example.com", vec![addr("192.0.2.1")]).is_ok());
    }

    #[test]
    fn allow_list_limits_hosts_and_networks() {
        let p = CallbackPolicy::new(&["hooks.example.com".into(), "10.1.0.0/16".into()], &[]);
        assert!(p
            .filter("hooks.example.com", vec![addr("192.0.2.1")])
            .is_ok());
        assert!(p
            .filter("other.example.com", vec![addr("10.1.2.3")])
            .is_ok());
        assert!(p
            .filter("other.example.com", vec![addr("192.0.2.1")])
            .is_err());
    }

    #[test]
    fn an_address_literal_in_the_url_is_checked() {
        let p = CallbackPolicy::new(&["127.0.0.2/32".into()], &["127.0.0.3/32".into()]);
        assert!(p.check_ip_literal("http://127.0.0.3:9/hook").is_err());
        assert!(p.check_ip_literal("http://127.0.0.1:9/hook").is_err());
        assert!(p.check_ip_literal("http://[::ffff:127.0.0.3]:9/").is_err());
        assert!(p.check_ip_literal("http://127.0.0.2:9/hook").is_ok());
        // Names are checked by the resolver, after resolution.
        assert!(p.check_ip_literal("http://localhost:9/hook").is_ok());
    }

    #[test]
    fn ipv4_mapped_ipv6_is_checked_as_ipv4() {
        let p = CallbackPolicy::new(&[], &["127.0.0.0/8".into()]);
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:80".parse().unwrap();
        assert!(p.filter("x", vec![mapped]).is_err());
    }
}

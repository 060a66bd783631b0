//! From a flow to the attributes of its series: the flow's own attributes,
//! the names the mappings give its ends, then only the selected ones.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

#[cfg(test)]
use crate::mapping::{Cidr, Port};
use crate::mapping::{Mappings, Pattern, Rule};
use crate::{Attributes, FlowKey};

/// Resolves the attributes of flows by the configured mappings.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    /// Longest prefix first, so the first match is the most specific.
    cidrs: Vec<(IpNet, EndAttributes)>,
    ports: HashMap<u16, Arc<str>>,
    processes: NameRules,
    containers: NameRules,
    domains: NameRules,
}

/// Rules on a name, in order; the first that matches wins. The rules whose
/// pattern is a whole name (`^nginx$`) are also indexed by it, so that a file
/// of many such rules is not searched one by one.
#[derive(Debug, Clone, Default)]
struct NameRules {
    rules: Vec<NameRule>,
    /// A whole name and the first rule that is exactly it.
    exact: HashMap<String, usize>,
    /// The other rules, in order.
    others: Vec<usize>,
}

impl NameRules {
    fn of(rules: &[Rule]) -> NameRules {
        let mut exact = HashMap::new();
        let mut others = Vec::new();
        for (n, rule) in rules.iter().enumerate() {
            match rule.pattern.exact() {
                Some(name) => {
                    exact.entry(name.to_owned()).or_insert(n);
                }
                None => others.push(n),
            }
        }
        NameRules {
            rules: rules.iter().map(NameRule::of).collect(),
            exact,
            others,
        }
    }

    /// The first rule that matches `name`.
    fn first(&self, name: &str) -> Option<&NameRule> {
        let exact = self.exact.get(name).copied();
        let other = self
            .others
            .iter()
            .copied()
            .take_while(|&n| exact.is_none_or(|e| n < e))
            .find(|&n| self.rules[n].pattern.is_match(name));
        other.or(exact).map(|n| &self.rules[n])
    }
}

/// A rule's attributes with both prefixes already applied.
#[derive(Debug, Clone)]
struct EndAttributes {
    source: Vec<(Arc<str>, Arc<str>)>,
    destination: Vec<(Arc<str>, Arc<str>)>,
}

impl EndAttributes {
    fn of<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone) -> EndAttributes {
        let prefixed = |prefix: &str| {
            pairs
                .clone()
                .map(|(name, value)| (Arc::from(format!("{prefix}.{name}")), Arc::from(value)))
                .collect()
        };
        EndAttributes {
            source: prefixed("source"),
            destination: prefixed("destination"),
        }
    }
}

#[derive(Debug, Clone)]
struct NameRule {
    pattern: Pattern,
    /// What the rule gives the end it names, prefixed for either end.
    end: EndAttributes,
}

impl NameRule {
    fn of(rule: &Rule) -> NameRule {
        NameRule {
            pattern: rule.pattern.clone(),
            end: EndAttributes::of(rule.attributes()),
        }
    }
}

impl Resolver {
    /// A resolver applying `mappings`.
    pub fn new(mappings: &Mappings) -> Resolver {
        let mut cidrs: Vec<(IpNet, EndAttributes)> = mappings
            .cidrs
            .iter()
            .map(|(net, attributes)| {
                let pairs = attributes.0.iter().map(|(n, v)| (n.as_str(), v.as_str()));
                (net.0.trunc(), EndAttributes::of(pairs))
            })
            .collect();
        cidrs.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        Resolver {
            cidrs,
            ports: mappings
                .ports
                .iter()
                .map(|(port, name)| (port.0, Arc::from(name.as_str())))
                .collect(),
            processes: NameRules::of(&mappings.processes),
            containers: NameRules::of(&mappings.containers),
            domains: NameRules::of(&mappings.domains),
        }
    }

    /// Every attribute of `key`'s flow: its own, then from the CIDR and
    /// port mappings of each end (the destination's real address and port
    /// where NAT rewrote them), then from the process and the container
    /// rules (each over the one before, for the source end).
    pub fn attributes(&self, key: &FlowKey) -> Attributes {
        let mut a = key.attributes();
        if let Some(end) = self.cidr(key.source_address) {
            set_all(&mut a, &end.source);
        }
        if let Some(end) = self.cidr(key.real_destination_address()) {
            set_all(&mut a, &end.destination);
        }
        if let Some(name) = key.source_port.and_then(|p| self.ports.get(&p)) {
            a.set("source.port.name", Arc::clone(name));
        }
        if let Some(name) = key.real_destination_port().and_then(|p| self.ports.get(&p)) {
            a.set("destination.port.name", Arc::clone(name));
        }
        let process = key.source_process_name();
        if let Some(rule) = self.processes.first(process) {
            set_all(&mut a, &rule.end.source);
        }
        if let Some(id) = key.source_container_id() {
            if let Some(rule) = self.containers.first(id) {
                set_all(&mut a, &rule.end.source);
            }
        }
        if let Some(domain) = &key.destination_domain {
            if let Some(rule) = self.domains.first(domain) {
                set_all(&mut a, &rule.end.destination);
            }
        }
        a
    }

    fn cidr(&self, address: IpAddr) -> Option<&EndAttributes> {
        let address = address.to_canonical();
        self.cidrs
            .iter()
            .find(|(net, _)| net.contains(&address))
            .map(|(_, end)| end)
    }
}

fn set_all(a: &mut Attributes, pairs: &[(Arc<str>, Arc<str>)]) {
    for (name, value) in pairs {
        a.set(Arc::clone(name), Arc::clone(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::AttributeMap;
    use crate::AttributeValue;
    use receiver::ProcessInfo;

    fn key(local: &str, remote: &str, name: &str, container: Option<&str>) -> FlowKey {
        FlowKey {
            transport: receiver::Transport::Tcp,
            network_type: crate::NetworkType::Ipv4,
            netns: 1,
            direction: receiver::Direction::Outgoing,
            source_address: local.parse().unwrap(),
            source_port: None,
            source_process: Arc::new(ProcessInfo {
                pid: 42,
                name: name.into(),
                container_id: container.map(Into::into),
            }),
            destination_address: remote.parse().unwrap(),
            destination_port: Some(8500),
            translation: Default::default(),
            destination_domain: None,
        }
    }

    fn attrs(pairs: &[(&str, &str)]) -> AttributeMap {
        AttributeMap(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn text(a: &Attributes, name: &str) -> Option<String> {
        a.get(name).map(AttributeValue::to_string)
    }

    fn mappings() -> Mappings {
        let mut m = Mappings::default();
        m.cidrs.insert(
            Cidr("10.1.0.0/16".parse().unwrap()),
            attrs(&[("service", "consul")]),
        );
        m.cidrs.insert(
            Cidr("10.1.2.0/24".parse().unwrap()),
            attrs(&[("service", "consul-canary")]),
        );
        m.cidrs.insert(
            Cidr("192.168.0.0/16".parse().unwrap()),
            attrs(&[("service", "office"), ("site", "hq")]),
        );
        m.ports.insert(Port(8500), "consul-http".into());
        m.processes.push(Rule {
            pattern: Pattern::new("^(nginx|envoy)$").unwrap(),
            service: Some("web".into()),
            attributes: AttributeMap::default(),
        });
        m.containers.push(Rule {
            pattern: Pattern::new("^3f2a").unwrap(),
            service: Some("billing".into()),
            attributes: attrs(&[("team", "payments")]),
        });
        m
    }

    #[test]
    fn domain_rules_name_the_remote_end_over_its_cidr() {
        let mut m = mappings();
        m.domains.push(Rule {
            pattern: Pattern::new(r"\.amazonaws\.com$").unwrap(),
            service: Some("aws".into()),
            attributes: attrs(&[("cloud", "aws")]),
        });
        let r = Resolver::new(&m);
        let mut k = key("192.168.1.5", "10.1.7.7", "curl", None);
        k.destination_domain = Some("s3.eu-west-1.amazonaws.com".into());
        let a = r.attributes(&k);
        assert_eq!(text(&a, "destination.service").as_deref(), Some("aws"));
        assert_eq!(text(&a, "destination.cloud").as_deref(), Some("aws"));
        assert_eq!(text(&a, "source.service").as_deref(), Some("office"));
        assert_eq!(
            text(&a, "destination.domain").as_deref(),
            Some("s3.eu-west-1.amazonaws.com")
        );
        k.destination_domain = Some("amazonaws.com.evil.example".into());
        let a = r.attributes(&k);
        assert_eq!(text(&a, "destination.service").as_deref(), Some("consul"));
        assert_eq!(m.names().1, ["cloud", "port.name", "service", "site"]);
    }

    #[test]
    fn a_cidr_names_the_remote_end_as_destination_and_the_local_as_source() {
        let r = Resolver::new(&mappings());
        let a = r.attributes(&key("192.168.1.5", "10.1.7.7", "curl", None));
        assert_eq!(text(&a, "destination.service").as_deref(), Some("consul"));
        assert_eq!(text(&a, "source.service").as_deref(), Some("office"));
        assert_eq!(text(&a, "source.site").as_deref(), Some("hq"));
        assert_eq!(text(&a, "destination.site"), None);
    }

    #[test]
    fn the_destination_mappings_name_the_peer_nat_sent_the_bytes_to() {
        let r = Resolver::new(&mappings());
        let mut k = key("192.168.1.5", "10.96.0.10", "curl", None);
        k.destination_port = Some(80);
        k.translation.destination = Some("10.1.7.7:8500".parse().unwrap());
        let a = r.attributes(&k);
        assert_eq!(text(&a, "destination.service").as_deref(), Some("consul"));
        assert_eq!(
            text(&a, "destination.port.name").as_deref(),
            Some("consul-http")
        );
        assert_eq!(
            text(&a, "destination.address").as_deref(),
            Some("10.96.0.10")
        );
    }

    #[test]
    fn the_longest_prefix_wins() {
        let r = Resolver::new(&mappings());
        let a = r.attributes(&key("127.0.0.1", "10.1.2.3", "curl", None));
        assert_eq!(
            text(&a, "destination.service").as_deref(),
            Some("consul-canary")
        );
    }

    #[test]
    fn ipv4_mapped_addresses_match_ipv4_ranges() {
        let r = Resolver::new(&mappings());
        let mut k = key("127.0.0.1", "10.1.7.7", "curl", None);
        k.destination_address = "::ffff:10.1.7.7".parse().unwrap();
        let a = r.attributes(&k);
        assert_eq!(text(&a, "destination.service").as_deref(), Some("consul"));
    }

    #[test]
    fn a_port_is_named_on_its_own_end_only() {
        let r = Resolver::new(&mappings());
        let a = r.attributes(&key("127.0.0.1", "10.9.9.9", "curl", None));
        assert_eq!(
            text(&a, "destination.port.name").as_deref(),
            Some("consul-http")
        );
        assert_eq!(text(&a, "source.port.name"), None);
    }

    #[test]
    fn process_rules_win_over_cidrs_and_containers_over_processes() {
        let r = Resolver::new(&mappings());
        let a = r.attributes(&key("192.168.1.5", "10.9.9.9", "nginx", None));
        assert_eq!(text(&a, "source.service").as_deref(), Some("web"));
        assert_eq!(text(&a, "source.site").as_deref(), Some("hq"));
        let a = r.attributes(&key("192.168.1.5", "10.9.9.9", "nginx", Some("3f2a99")));
        assert_eq!(text(&a, "source.service").as_deref(), Some("billing"));
        assert_eq!(text(&a, "source.team").as_deref(), Some("payments"));
        // An unanchored pattern searches: "nginx-worker" does not match
        // ^(nginx|envoy)$.
        let a = r.attributes(&key("127.0.0.1", "10.9.9.9", "nginx-worker", None));
        assert_eq!(text(&a, "source.service"), None);
    }

    #[test]
    fn the_first_matching_rule_wins_whether_indexed_or_searched() {
        let rules = |patterns: &[&str]| -> NameRules {
            let rules: Vec<Rule> = patterns
                .iter()
                .enumerate()
                .map(|(n, p)| Rule {
                    pattern: Pattern::new(p).unwrap(),
                    service: Some(n.to_string()),
                    attributes: AttributeMap::default(),
                })
                .collect();
            NameRules::of(&rules)
        };
        let service = |rules: &NameRules, name: &str| {
            rules
                .first(name)
                .map(|r| r.end.source[0].1.to_string())
                .unwrap_or_default()
        };
        let searched_first = rules(&["^ng", "^nginx$", "^nginx$", "x$"]);
        assert_eq!(service(&searched_first, "nginx"), "0");
        assert_eq!(service(&searched_first, "box"), "3");
        assert_eq!(service(&searched_first, "web"), "");
        let indexed_first = rules(&["^nginx$", "^ng", "^nginx$", "x$"]);
        assert_eq!(service(&indexed_first, "nginx"), "0");
        assert_eq!(service(&indexed_first, "ngx"), "1");
        assert_eq!(service(&indexed_first, "box"), "3");
        assert_eq!(indexed_first.others, [1, 3]);
    }

    #[test]
    fn without_mappings_a_flow_has_its_own_attributes() {
        let k = key("127.0.0.1", "10.9.9.9", "curl", None);
        assert_eq!(Resolver::default().attributes(&k), k.attributes());
        assert_eq!(
            text(&k.attributes(), "source.process.pid").as_deref(),
            Some("42")
        );
    }
}

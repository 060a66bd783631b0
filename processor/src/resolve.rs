//! From a flow to the attributes of its series: the flow's own attributes,
//! the names the mappings give its ends, then only the selected ones.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

#[cfg(test)]
use crate::mapping::{Cidr, ContainerRule, NameRuleOn, Port};
use crate::mapping::{ContainerField, EndAttribute, Mappings, OnRule, Pattern, Rule};
use crate::{AttributeValue, Attributes, EndNames, FlowKey};

/// Resolves the attributes of flows by the configured mappings.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    /// Longest prefix first, so the first match is the most specific.
    cidrs: Vec<(IpNet, EndAttributes)>,
    ports: HashMap<u16, Arc<str>>,
    processes: NameRules,
    /// The container rules by the field they match, each group with the
    /// attribute that holds the field (none for the id).
    containers: Vec<(Option<String>, NameRules)>,
    /// Sources of names for the ends, in the order they were added.
    end_names: Vec<Arc<dyn EndNames>>,
    domains: NameRules,
    /// The rules on other sources' names, by the attribute they match.
    names: Vec<(EndAttribute, NameRules)>,
}

/// Rules on a name, in order; the first that matches wins. The rules whose
/// pattern is a whole name (`^nginx$`) are also indexed by it, so that a file
/// of many such rules is not searched one by one.
#[derive(Debug, Clone, Default)]
struct NameRules {
    /// Each rule with its place among all rules of its kind.
    rules: Vec<(usize, NameRule)>,
    /// A whole name and the first rule that is exactly it.
    exact: HashMap<String, usize>,
    /// The other rules, in order.
    others: Vec<usize>,
}

impl NameRules {
    /// Rules in order, each with its place among all rules of its kind.
    fn of<'a>(rules: impl Iterator<Item = (usize, &'a Rule)>) -> NameRules {
        let rules: Vec<(usize, &Rule)> = rules.collect();
        let mut exact = HashMap::new();
        let mut others = Vec::new();
        for (n, (_, rule)) in rules.iter().enumerate() {
            match rule.pattern.exact() {
                Some(name) => {
                    exact.entry(name.to_owned()).or_insert(n);
                }
                None => others.push(n),
            }
        }
        NameRules {
            rules: rules
                .iter()
                .map(|&(place, rule)| (place, NameRule::of(rule)))
                .collect(),
            exact,
            others,
        }
    }

    /// The first rule that matches `name`, with its place.
    fn first(&self, name: &str) -> Option<(usize, &NameRule)> {
        let exact = self.exact.get(name).copied();
        let other = self
            .others
            .iter()
            .copied()
            .take_while(|&n| exact.is_none_or(|e| n < e))
            .find(|&n| self.rules[n].1.pattern.is_match(name));
        other.or(exact).map(|n| (self.rules[n].0, &self.rules[n].1))
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
            processes: NameRules::of(mappings.processes.iter().enumerate()),
            containers: grouped(&mappings.containers, ContainerField::attribute),
            end_names: Vec::new(),
            domains: NameRules::of(mappings.domains.iter().enumerate()),
            names: grouped(&mappings.names, |on| on.clone()),
        }
    }

    /// Adds a source of names for the ends of flows; its attributes come
    /// before the mappings', so that rules can match them.
    pub fn add_end_names(&mut self, names: Arc<dyn EndNames>) {
        self.end_names.push(names);
    }

    /// Every attribute of `key`'s flow: its own, then the [`EndNames`]
    /// sources', then from the CIDR and port mappings of each end (the
    /// destination's real address and port where NAT rewrote them), then
    /// from the process and the container rules (each over the one before,
    /// for the source end).
    pub fn attributes(&self, key: &FlowKey) -> Attributes {
        let mut a = key.attributes();
        for names in &self.end_names {
            names.name_local(&key.source_process, &mut a);
            names.name_remote(key.remote_end(), &mut a);
        }
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
        if let Some((_, rule)) = self.processes.first(process) {
            set_all(&mut a, &rule.end.source);
        }
        if let Some(rule) = self.container_rule(key, &a) {
            set_all(&mut a, &rule.end.source);
        }
        if let Some(domain) = &key.destination_domain {
            if let Some((_, rule)) = self.domains.first(domain) {
                set_all(&mut a, &rule.end.destination);
            }
        }
        for destination in [false, true] {
            let of_end = self
                .names
                .iter()
                .filter(|(on, _)| on.destination == destination);
            let found = first_on(
                of_end.map(|(on, rules)| (Some(on.name.as_str()), rules)),
                key,
                &a,
            );
            if let Some(rule) = found {
                let end = if destination {
                    &rule.end.destination
                } else {
                    &rule.end.source
                };
                set_all(&mut a, end);
            }
        }
        a
    }

    /// The first container rule that matches, over all fields.
    fn container_rule(&self, key: &FlowKey, a: &Attributes) -> Option<&NameRule> {
        let groups = self
            .containers
            .iter()
            .map(|(attribute, rules)| (attribute.as_deref(), rules));
        first_on(groups, key, a)
    }

    fn cidr(&self, address: IpAddr) -> Option<&EndAttributes> {
        let address = address.to_canonical();
        self.cidrs
            .iter()
            .find(|(net, _)| net.contains(&address))
            .map(|(_, end)| end)
    }
}

/// The first rule, in file order, that matches its group's value: the
/// attribute named (the container id for `None`).
fn first_on<'r>(
    groups: impl Iterator<Item = (Option<&'r str>, &'r NameRules)>,
    key: &FlowKey,
    a: &Attributes,
) -> Option<&'r NameRule> {
    groups
        .filter_map(|(attribute, rules)| {
            let value = match attribute {
                None => key.source_container_id()?,
                Some(name) => match a.get(name)? {
                    AttributeValue::String(value) => value,
                    _ => return None,
                },
            };
            rules.first(value)
        })
        .min_by_key(|(place, _)| *place)
        .map(|(_, rule)| rule)
}

/// `rules` grouped by what `field` says each matches, keeping each rule's
/// place among all of them.
fn grouped<F: PartialEq, G>(rules: &[OnRule<F>], field: impl Fn(&F) -> G) -> Vec<(G, NameRules)> {
    let mut fields: Vec<&F> = Vec::new();
    for rule in rules {
        if !fields.contains(&&rule.on) {
            fields.push(&rule.on);
        }
    }
    fields
        .into_iter()
        .map(|on| {
            let of_field = rules
                .iter()
                .enumerate()
                .filter(|(_, rule)| rule.on == *on)
                .map(|(place, rule)| (place, &rule.rule));
            (field(on), NameRules::of(of_field))
        })
        .collect()
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
    use crate::{AttributeValue, RemoteEnd};
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
                pod_uid: None,
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
        m.containers.push(ContainerRule {
            on: ContainerField::Id,
            rule: Rule {
                pattern: Pattern::new("^3f2a").unwrap(),
                service: Some("billing".into()),
                attributes: attrs(&[("team", "payments")]),
            },
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
    fn container_rules_match_the_runtimes_name_image_and_labels_in_order() {
        let index = containers::ContainerIndex::new(4);
        index.insert(
            containers::Runtime::Docker,
            "3f2a99".into(),
            containers::ContainerFacts {
                name: "billing-7".into(),
                image: containers::Image::parse("registry:5000/shop/billing:1.2"),
                labels: [("team".to_owned(), "payments".to_owned())].into(),
            },
        );
        let rule = |on: &str, pattern: &str, service: &str| ContainerRule {
            on: on.parse().unwrap(),
            rule: Rule {
                pattern: Pattern::new(pattern).unwrap(),
                service: Some(service.into()),
                attributes: AttributeMap::default(),
            },
        };
        let service = |rules: Vec<ContainerRule>| {
            let mut r = Resolver::new(&Mappings {
                containers: rules,
                ..Mappings::default()
            });
            r.add_end_names(Arc::new(index.clone()));
            let a = r.attributes(&key("127.0.0.1", "10.9.9.9", "nc", Some("3f2a99")));
            assert_eq!(
                text(&a, "source.container.name").as_deref(),
                Some("billing-7")
            );
            assert_eq!(
                text(&a, "source.container.image.tag").as_deref(),
                Some("1.2")
            );
            assert_eq!(
                text(&a, "source.container.label.team").as_deref(),
                Some("payments")
            );
            text(&a, "source.service")
        };
        let by_label = rule("label.team", "^payments$", "pay");
        let by_name = rule("name", "^billing-", "billing");
        let by_image = rule("image", "^registry:5000/shop/billing$", "shop");
        let by_id = rule("id", "^3f2a", "by-id");
        let no_match = rule("label.team", "^search$", "search");
        assert_eq!(
            service(vec![by_label.clone(), by_name.clone()]).as_deref(),
            Some("pay")
        );
        assert_eq!(
            service(vec![by_name.clone(), by_label]).as_deref(),
            Some("billing")
        );
        assert_eq!(
            service(vec![no_match.clone(), by_image]).as_deref(),
            Some("shop")
        );
        assert_eq!(
            service(vec![no_match, by_id, by_name]).as_deref(),
            Some("by-id")
        );
    }

    /// A source naming every local end `cart` and every remote end `db`.
    #[derive(Debug)]
    struct Shop;

    impl EndNames for Shop {
        fn name_local(&self, _: &receiver::ProcessInfo, a: &mut Attributes) {
            a.set("source.k8s.deployment.name", "cart-v2");
        }
        fn name_remote(&self, _: RemoteEnd, a: &mut Attributes) {
            a.set("destination.k8s.service.name", "db");
        }
    }

    #[test]
    fn name_rules_match_another_sources_names_for_their_own_end() {
        let rule = |on: &str, pattern: &str, service: &str| NameRuleOn {
            on: on.parse().unwrap(),
            rule: Rule {
                pattern: Pattern::new(pattern).unwrap(),
                service: Some(service.into()),
                attributes: AttributeMap::default(),
            },
        };
        let mut m = mappings();
        m.names = vec![
            rule("destination.k8s.service.name", "^web$", "web"),
            rule("destination.k8s.service.name", "^db$", "postgres"),
            rule("source.k8s.deployment.name", "^cart", "shop"),
        ];
        let mut r = Resolver::new(&m);
        r.add_end_names(Arc::new(Shop));
        let a = r.attributes(&key("127.0.0.1", "10.1.7.7", "nginx", None));
        assert_eq!(
            text(&a, "destination.service").as_deref(),
            Some("postgres"),
            "over the CIDR"
        );
        assert_eq!(
            text(&a, "source.service").as_deref(),
            Some("shop"),
            "over the process rule"
        );
        assert_eq!(m.names().0, ["port.name", "service", "site", "team"]);
        assert!("k8s.service.name".parse::<EndAttribute>().is_err());
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
            NameRules::of(rules.iter().enumerate())
        };
        let service = |rules: &NameRules, name: &str| {
            rules
                .first(name)
                .map(|(_, r)| r.end.source[0].1.to_string())
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

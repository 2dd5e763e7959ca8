use hickory_resolver::proto::rr::Name;

use super::*;
use crate::config::{DnsServer, Service};

fn name(text: &str) -> Name {
    Name::from_ascii(text).unwrap()
}

#[test]
fn the_naming_convention_matches_the_host_label_or_its_parts() {
    let smtp = Service::named("smtp");
    for matching in
        ["mail.example.org", "SMTP2.example.org", "mx-out.example.org", "relay-1.example.org", "mta.example.org"]
    {
        assert!(matches_convention(&name(matching), &smtp), "{matching}");
    }
    for other in ["mailhost.example.org", "gmail.com", "ws42.mail.example.org", "smtpx.example.org", "web.example.org"]
    {
        assert!(!matches_convention(&name(other), &smtp), "{other}");
    }
}

#[test]
fn names_are_shown_with_every_unusual_byte_escaped() {
    let mut hostile = Name::from_labels([&b"a<b>\x07\x00;"[..], b"example", b"org"]).unwrap();
    hostile.set_fqdn(true);
    assert_eq!(display_name(&hostile), "a\\060b\\062\\007\\000\\059.example.org");
    assert_eq!(display_name(&name("mx_1.example-2.org.")), "mx_1.example-2.org");
}

#[test]
fn dns_servers_are_an_address_with_or_without_a_port() {
    assert_eq!("127.0.0.1:5353".parse::<DnsServer>().unwrap().0.to_string(), "127.0.0.1:5353");
    assert_eq!("::1".parse::<DnsServer>().unwrap().0.to_string(), "[::1]:53");
    assert!("localhost".parse::<DnsServer>().is_err());
}

/// A host's MX status is settled by the lookups of its own family: an
/// unanswered AAAA leaves IPv6 hosts unknown and IPv4 hosts certain.
#[test]
fn the_mx_status_needs_only_the_hosts_own_family_answered() {
    let target = RecordTarget {
        domain: "example.org".into(),
        record: "MX".into(),
        target: "mx1.example.org".into(),
        preference: 10,
    };
    let mx = RecordTargets {
        targets: [("192.0.2.25".parse().unwrap(), vec![target])].into_iter().collect(),
        unanswered_v6: vec!["example.org".into()],
        ..RecordTargets::default()
    };
    assert_eq!(mx.status("192.0.2.25".parse().unwrap()), Some(true));
    assert_eq!(mx.status("192.0.2.77".parse().unwrap()), Some(false), "every A lookup was answered");
    assert_eq!(mx.status("2001:db8:10::77".parse().unwrap()), None, "an AAAA lookup was not");
    let no_mx_answer = RecordTargets { unanswered: vec!["example.org".into()], ..mx.clone() };
    assert_eq!(no_mx_answer.status("192.0.2.77".parse().unwrap()), None);
    assert_eq!(
        RecordTargets { unconfigured: true, ..RecordTargets::default() }.status("192.0.2.77".parse().unwrap()),
        None
    );
}

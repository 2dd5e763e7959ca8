use hickory_resolver::proto::rr::Name;

use super::*;
use crate::config::{Service, ServiceConfig};

fn name(text: &str) -> Name {
    Name::from_ascii(text).unwrap()
}

#[test]
fn the_naming_convention_matches_the_host_label_or_its_parts() {
    let smtp = Service::new("smtp", &ServiceConfig::default());
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

//! IPFIX (RFC 7011) and NetFlow: the wire formats in which rogue hands its
//! flows to the collectors a network already runs (nfdump, SiLK, ntopng,
//! Akvorado, Elastic), over UDP, TCP or in files (RFC 5655).
//!
//! rogue exports two templates, one per address family, with the standard
//! information elements of a unidirectional flow; ICMP type and code travel
//! in destinationTransportPort (`type << 8 | code`) as NetFlow has always
//! carried them and as nfdump reads them.

pub mod collect;
pub mod decode;
pub mod export;

/// An information element of rogue's templates: IANA id and length in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Element {
    pub id: u16,
    pub length: u16,
}

const fn element(id: u16, length: u16) -> Element {
    Element { id, length }
}

pub const OCTET_DELTA_COUNT: Element = element(1, 8);
pub const PACKET_DELTA_COUNT: Element = element(2, 8);
pub const PROTOCOL_IDENTIFIER: Element = element(4, 1);
pub const TCP_CONTROL_BITS: Element = element(6, 2);
pub const SOURCE_TRANSPORT_PORT: Element = element(7, 2);
pub const SOURCE_IPV4_ADDRESS: Element = element(8, 4);
pub const INGRESS_INTERFACE: Element = element(10, 4);
pub const DESTINATION_TRANSPORT_PORT: Element = element(11, 2);
pub const DESTINATION_IPV4_ADDRESS: Element = element(12, 4);
pub const SOURCE_IPV6_ADDRESS: Element = element(27, 16);
pub const DESTINATION_IPV6_ADDRESS: Element = element(28, 16);
pub const FLOW_START_MILLISECONDS: Element = element(152, 8);
pub const FLOW_END_MILLISECONDS: Element = element(153, 8);

/// IPFIX's version number, in every message header.
pub const VERSION: u16 = 10;
/// Set id of template sets.
pub const TEMPLATE_SET: u16 = 2;
/// Message header and set header lengths.
pub const MESSAGE_HEADER: usize = 16;
pub const SET_HEADER: usize = 4;

/// One of rogue's two templates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Template {
    pub id: u16,
    pub elements: &'static [Element],
}

impl Template {
    /// Bytes of one data record.
    pub const fn record_length(&self) -> usize {
        let mut length = 0;
        let mut i = 0;
        while i < self.elements.len() {
            length += self.elements[i].length as usize;
            i += 1;
        }
        length
    }
}

/// The fields after the addresses, the same in both templates.
macro_rules! flow_template {
    ($id:expr, $src:expr, $dst:expr) => {
        Template {
            id: $id,
            elements: &[
                $src,
                $dst,
                SOURCE_TRANSPORT_PORT,
                DESTINATION_TRANSPORT_PORT,
                PROTOCOL_IDENTIFIER,
                TCP_CONTROL_BITS,
                PACKET_DELTA_COUNT,
                OCTET_DELTA_COUNT,
                FLOW_START_MILLISECONDS,
                FLOW_END_MILLISECONDS,
                INGRESS_INTERFACE,
            ],
        }
    };
}

pub const IPV4_TEMPLATE: Template = flow_template!(256, SOURCE_IPV4_ADDRESS, DESTINATION_IPV4_ADDRESS);
pub const IPV6_TEMPLATE: Template = flow_template!(257, SOURCE_IPV6_ADDRESS, DESTINATION_IPV6_ADDRESS);

//! A host's port usage in one time bin, packed into one value of its
//! `host_bins` row: one B-tree row per host and bin rather than one per
//! port. (A row per port was a third of the time of storing profiles: a
//! workstation's every ephemeral port made one.)
//!
//! The packing: entries in (direction, protocol, port) order, each as its
//! direction and protocol (a byte each), its port (two bytes, big-endian),
//! then its flows, packets and bytes as LEB128 varints.

use rusqlite::{
    Connection,
    functions::{Aggregate, Context, FunctionFlags},
};

/// Direction, protocol, port.
pub type PortKey = (u8, u8, u16);

/// A port's key; its flows, packets, bytes.
pub type PortEntry = (PortKey, [u64; 3]);

/// `entries`, in key order and each key once, packed.
pub fn pack(entries: impl IntoIterator<Item = PortEntry>) -> Vec<u8> {
    let mut packed = Vec::new();
    for ((direction, proto, port), counts) in entries {
        packed.extend_from_slice(&[direction, proto]);
        packed.extend_from_slice(&port.to_be_bytes());
        for count in counts {
            varint(&mut packed, count);
        }
    }
    packed
}

/// The entries of `packed`, or `None` if it is not a packing.
pub fn unpack(mut packed: &[u8]) -> Option<Vec<PortEntry>> {
    let mut entries = Vec::new();
    while !packed.is_empty() {
        let [direction, proto, high, low] = *packed.first_chunk::<4>()?;
        packed = &packed[4..];
        let mut counts = [0; 3];
        for count in &mut counts {
            *count = read_varint(&mut packed)?;
        }
        entries.push(((direction, proto, u16::from_be_bytes([high, low])), counts));
    }
    Some(entries)
}

/// Two packings as one: the entries of both, those of the same key added up.
pub fn merge(a: &[u8], b: &[u8]) -> Option<Vec<u8>> {
    let (a, b) = (unpack(a)?, unpack(b)?);
    let mut merged = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                let (key, (x, y)) = (x.0, (x.1, y.1));
                a.next();
                b.next();
                (key, [x[0] + y[0], x[1] + y[1], x[2] + y[2]])
            }
            (Some(x), Some(y)) if x.0 < y.0 => a.next()?,
            (Some(_), Some(_)) | (None, Some(_)) => b.next()?,
            (Some(_), None) => a.next()?,
            (None, None) => break,
        };
        merged.push(next);
    }
    Some(pack(merged))
}

/// The SQL functions the store's statements use: `rogue_merge_ports(a, b)`
/// (what a write adds to a row's packing; NULL is no entry) and the
/// aggregate `rogue_pack_ports(direction, proto, port, flows, packets,
/// bytes)` (migration 8).
pub fn define_functions(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("rogue_merge_ports", 2, flags, |context| {
        let a: Option<Vec<u8>> = context.get(0)?;
        let b: Option<Vec<u8>> = context.get(1)?;
        merge(a.as_deref().unwrap_or_default(), b.as_deref().unwrap_or_default())
            .ok_or_else(|| rusqlite::Error::UserFunctionError("not a packing of port usage".into()))
    })?;
    conn.create_aggregate_function("rogue_pack_ports", 6, flags, PackPorts)
}

/// The aggregate `rogue_pack_ports`: rows of port usage, one packing.
struct PackPorts;

impl Aggregate<Vec<PortEntry>, Vec<u8>> for PackPorts {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<Vec<PortEntry>> {
        Ok(Vec::new())
    }

    fn step(&self, context: &mut Context<'_>, entries: &mut Vec<PortEntry>) -> rusqlite::Result<()> {
        let key = (context.get(0)?, context.get(1)?, context.get(2)?);
        entries.push((key, [context.get(3)?, context.get(4)?, context.get(5)?]));
        Ok(())
    }

    fn finalize(&self, _: &mut Context<'_>, entries: Option<Vec<PortEntry>>) -> rusqlite::Result<Vec<u8>> {
        let mut entries = entries.unwrap_or_default();
        entries.sort_unstable_by_key(|(key, _)| *key);
        Ok(pack(entries))
    }
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packings_read_back_and_merge_by_key() {
        let a = vec![((0, 6, 25), [3, 10, 1000]), ((1, 6, 52000), [1, 2, u64::MAX]), ((1, 17, 53), [0, 0, 0])];
        let b = vec![((0, 6, 25), [1, 1, 1]), ((0, 17, 53), [2, 2, 200])];
        assert_eq!(unpack(&pack(a.clone())), Some(a.clone()));
        let merged = unpack(&merge(&pack(a), &pack(b)).unwrap()).unwrap();
        assert_eq!(
            merged,
            vec![
                ((0, 6, 25), [4, 11, 1001]),
                ((0, 17, 53), [2, 2, 200]),
                ((1, 6, 52000), [1, 2, u64::MAX]),
                ((1, 17, 53), [0, 0, 0])
            ]
        );
        assert_eq!(unpack(&[]), Some(Vec::new()));
        assert_eq!(unpack(&[0, 6, 0]), None, "cut in a key");
        assert_eq!(unpack(&[0, 6, 0, 25, 0x80]), None, "cut in a count");
        assert_eq!(unpack(&[0, 6, 0, 25, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), None);
    }
}

//! msgpack written by hand, byte by byte, for the engine KV event fixtures.

#![allow(dead_code, reason = "each test file uses a different part")]

pub(crate) fn array(n: usize) -> Vec<u8> {
    match u8::try_from(n) {
        Ok(n) if n < 16 => vec![0x90 | n],
        _ => {
            let mut bytes = vec![0xdc];
            bytes.extend_from_slice(&u16::try_from(n).expect("small").to_be_bytes());
            bytes
        }
    }
}
pub(crate) fn string(s: &str) -> Vec<u8> {
    assert!(s.len() < 32);
    let mut bytes = vec![0xa0 | s.len() as u8];
    bytes.extend_from_slice(s.as_bytes());
    bytes
}
pub(crate) fn float(x: f64) -> Vec<u8> {
    let mut bytes = vec![0xcb];
    bytes.extend_from_slice(&x.to_be_bytes());
    bytes
}
pub(crate) fn uint(x: u64) -> Vec<u8> {
    let mut bytes = vec![0xcf];
    bytes.extend_from_slice(&x.to_be_bytes());
    bytes
}
pub(crate) fn int(x: i64) -> Vec<u8> {
    let mut bytes = vec![0xd3];
    bytes.extend_from_slice(&x.to_be_bytes());
    bytes
}
pub(crate) fn small(x: u8) -> Vec<u8> {
    assert!(x < 128);
    vec![x]
}
pub(crate) fn binary(b: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0xc4, b.len() as u8];
    bytes.extend_from_slice(b);
    bytes
}
pub(crate) const NIL: u8 = 0xc0;

/// An array of `items`, each already written.
pub(crate) fn list(items: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = array(items.len());
    for item in items {
        bytes.extend_from_slice(item);
    }
    bytes
}

/// A map of up to 15 fields, keyed by name, each value already written.
pub(crate) fn map(fields: &[(&str, Vec<u8>)]) -> Vec<u8> {
    assert!(fields.len() < 16);
    let mut bytes = vec![0x80 | fields.len() as u8];
    for (key, value) in fields {
        bytes.extend(string(key));
        bytes.extend_from_slice(value);
    }
    bytes
}

/// A map with a map16 header whatever its size, as msgspec writes a struct that may have more
/// than 15 fields (vLLM 0.34.0's `BlockStored`, 16 with its tag), each value already written.
pub(crate) fn map16(fields: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut bytes = vec![0xde];
    bytes.extend_from_slice(&u16::try_from(fields.len()).expect("small").to_be_bytes());
    for (key, value) in fields {
        bytes.extend(string(key));
        bytes.extend_from_slice(value);
    }
    bytes
}

pub(crate) fn concat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// `[timestamp, [events…], nil]`.
pub(crate) fn batch(events: &[Vec<u8>]) -> Vec<u8> {
    let mut events_array = array(events.len());
    for event in events {
        events_array.extend_from_slice(event);
    }
    concat(&[array(3), float(1_700_000_000.5), events_array, vec![NIL]])
}

pub(crate) fn tokens(ids: &[u8]) -> Vec<u8> {
    let mut bytes = array(ids.len());
    for &id in ids {
        bytes.extend(small(id));
    }
    bytes
}

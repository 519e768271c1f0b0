//! The metadata section of a GGUF file: enough to build a tokenizer and a chat template
//! without loading a model's tensors.
//!
//! A GGUF file starts with the magic `GGUF`, a version (2 or 3), the tensor count, the
//! metadata count and then the metadata as key–value pairs; every integer is little-endian.
//! This reader stops after the metadata.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::Error;

const MAGIC: u32 = u32::from_le_bytes(*b"GGUF");
/// Strings up to 64 MiB (a chat template is a few KiB).
const MAX_STRING: u64 = 64 << 20;
/// Arrays up to 16 M items (a vocabulary is 32 K–256 K).
const MAX_ARRAY: u64 = 16 << 20;
/// Arrays of arrays up to 8 deep: each level is a call, so the depth is bounded for the stack.
const MAX_DEPTH: usize = 8;
/// Items reserved before they are read: a claimed length costs memory only as items arrive.
const RESERVE: usize = 4096;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Any unsigned integer type.
    Uint(u64),
    /// Any signed integer type.
    Int(i64),
    /// `f32` or `f64`.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string.
    String(String),
    /// An array of values of one type.
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(text) => Some(text),
            _ => None,
        }
    }

    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::Uint(value) => Some(value),
            GgufValue::Int(value) => u64::try_from(value).ok(),
            _ => None,
        }
    }

    /// The value as an array, if it is one.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// The metadata of a GGUF file, by key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GgufMetadata {
    entries: BTreeMap<String, GgufValue>,
}

impl GgufMetadata {
    /// Read the metadata from the start of a GGUF file.
    ///
    /// A reader that fails or ends inside the metadata gives [`Error::GgufRead`]; data that is
    /// not GGUF metadata, one of the `Error::NotGguf` and `Error::Gguf*` errors.
    pub fn read(reader: &mut impl Read) -> Result<Self, Error> {
        let magic = read_u32(reader)?;
        let version = read_u32(reader)?;
        if magic != MAGIC || !(2..=3).contains(&version) {
            return Err(Error::NotGguf { magic, version });
        }
        let _tensors = read_u64(reader)?;
        let count = read_u64(reader)?;
        let mut entries = BTreeMap::new();
        for _ in 0..count {
            let key = read_string(reader, "(key)")?;
            let tag = read_u32(reader)?;
            let value = read_value(reader, &key, tag, 0)?;
            entries.insert(key, value);
        }
        Ok(GgufMetadata { entries })
    }

    /// Read the metadata of the GGUF file at `path`.
    ///
    /// A file that cannot be opened, or that ends inside its metadata, gives [`Error::Io`] with
    /// the path; otherwise the errors of [`GgufMetadata::read`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|source| Error::io(path, source))?;
        GgufMetadata::read(&mut std::io::BufReader::new(file)).map_err(|error| match error {
            Error::GgufRead { source } => Error::io(path, source),
            other => other,
        })
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.entries.get(key)
    }

    /// Every key, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

fn read_value(
    reader: &mut impl Read,
    key: &str,
    tag: u32,
    depth: usize,
) -> Result<GgufValue, Error> {
    Ok(match tag {
        0 => GgufValue::Uint(u64::from(read_array::<1>(reader)?[0])),
        1 => GgufValue::Int(i64::from(i8::from_le_bytes(read_array(reader)?))),
        2 => GgufValue::Uint(u64::from(u16::from_le_bytes(read_array(reader)?))),
        3 => GgufValue::Int(i64::from(i16::from_le_bytes(read_array(reader)?))),
        4 => GgufValue::Uint(u64::from(read_u32(reader)?)),
        5 => GgufValue::Int(i64::from(i32::from_le_bytes(read_array(reader)?))),
        6 => GgufValue::Float(f64::from(f32::from_le_bytes(read_array(reader)?))),
        7 => GgufValue::Bool(read_array::<1>(reader)?[0] != 0),
        8 => GgufValue::String(read_string(reader, key)?),
        9 => {
            if depth >= MAX_DEPTH {
                return Err(Error::GgufTooDeep {
                    key: key.to_owned(),
                    limit: MAX_DEPTH,
                });
            }
            let item_tag = read_u32(reader)?;
            let len = read_u64(reader)?;
            if len > MAX_ARRAY {
                return Err(Error::GgufTooLong {
                    key: key.to_owned(),
                    len,
                });
            }
            let mut items = Vec::with_capacity((len as usize).min(RESERVE));
            for _ in 0..len {
                items.push(read_value(reader, key, item_tag, depth + 1)?);
            }
            GgufValue::Array(items)
        }
        10 => GgufValue::Uint(read_u64(reader)?),
        11 => GgufValue::Int(i64::from_le_bytes(read_array(reader)?)),
        12 => GgufValue::Float(f64::from_le_bytes(read_array(reader)?)),
        tag => {
            return Err(Error::GgufUnknownType {
                key: key.to_owned(),
                tag,
            });
        }
    })
}

fn read_array<const N: usize>(reader: &mut impl Read) -> Result<[u8; N], Error> {
    let mut bytes = [0; N];
    reader.read_exact(&mut bytes).map_err(read_error)?;
    Ok(bytes)
}

fn read_error(source: std::io::Error) -> Error {
    Error::GgufRead { source }
}

fn read_u32(reader: &mut impl Read) -> Result<u32, Error> {
    Ok(u32::from_le_bytes(read_array(reader)?))
}

fn read_u64(reader: &mut impl Read) -> Result<u64, Error> {
    Ok(u64::from_le_bytes(read_array(reader)?))
}

fn read_string(reader: &mut impl Read, key: &str) -> Result<String, Error> {
    let len = read_u64(reader)?;
    if len > MAX_STRING {
        return Err(Error::GgufTooLong {
            key: key.to_owned(),
            len,
        });
    }
    let mut bytes = vec![0; len as usize];
    reader.read_exact(&mut bytes).map_err(read_error)?;
    String::from_utf8(bytes).map_err(|_| Error::GgufNotUtf8 {
        key: key.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF header with the given metadata entries, each already encoded.
    fn file(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(0u64.to_le_bytes());
        bytes.extend((entries.len() as u64).to_le_bytes());
        for entry in entries {
            bytes.extend(entry);
        }
        bytes
    }

    fn string(text: &str) -> Vec<u8> {
        let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
        bytes.extend(text.as_bytes());
        bytes
    }

    fn entry(key: &str, tag: u32, value: &[u8]) -> Vec<u8> {
        let mut bytes = string(key);
        bytes.extend(tag.to_le_bytes());
        bytes.extend(value);
        bytes
    }

    #[test]
    fn reads_scalars_strings_and_arrays() {
        let mut tokens = 8u32.to_le_bytes().to_vec();
        tokens.extend(2u64.to_le_bytes());
        tokens.extend(string("a"));
        tokens.extend(string("b"));
        let bytes = file(&[
            entry("general.name", 8, &string("tiny")),
            entry("tokenizer.ggml.eos_token_id", 4, &7u32.to_le_bytes()),
            entry("tokenizer.ggml.tokens", 9, &tokens),
            entry("x.flag", 7, &[1]),
            entry("x.neg", 5, &(-3i32).to_le_bytes()),
        ]);
        let metadata = GgufMetadata::read(&mut bytes.as_slice()).expect("valid header");
        assert_eq!(
            metadata.get("general.name").and_then(GgufValue::as_str),
            Some("tiny")
        );
        assert_eq!(
            metadata
                .get("tokenizer.ggml.eos_token_id")
                .and_then(GgufValue::as_u64),
            Some(7)
        );
        let tokens = metadata
            .get("tokenizer.ggml.tokens")
            .and_then(GgufValue::as_array);
        assert_eq!(tokens.map(<[GgufValue]>::len), Some(2));
        assert_eq!(metadata.get("x.flag"), Some(&GgufValue::Bool(true)));
        assert_eq!(metadata.get("x.neg").and_then(GgufValue::as_u64), None);
    }

    #[test]
    fn rejects_other_files_and_absurd_lengths() {
        let error = GgufMetadata::read(&mut b"PK\x03\x04\0\0\0\0".as_slice());
        assert!(matches!(error, Err(Error::NotGguf { .. })));
        let mut huge = string("k");
        huge.extend(8u32.to_le_bytes());
        huge.extend(u64::MAX.to_le_bytes());
        let error = GgufMetadata::read(&mut file(&[huge]).as_slice());
        assert!(matches!(error, Err(Error::GgufTooLong { .. })));
        let truncated = file(&[entry("k", 4, &[1, 2])]);
        assert!(matches!(
            GgufMetadata::read(&mut truncated.as_slice()),
            Err(Error::GgufRead { .. })
        ));
    }

    /// An array of arrays of arrays… nested `levels` deep, each claiming `len` items, then
    /// nothing: as small as a file gets, and as deep as the nesting asks.
    fn nested(levels: usize, len: u64) -> Vec<u8> {
        let mut value = Vec::new();
        for _ in 0..levels {
            value.extend(9u32.to_le_bytes());
            value.extend(len.to_le_bytes());
        }
        file(&[entry("k", 9, &value)])
    }

    #[test]
    fn deep_nesting_is_refused_without_exhausting_the_stack() {
        // 100,000 levels in 1.2 MB: before the limit, one call per level overflowed the stack.
        let error = GgufMetadata::read(&mut nested(100_000, 1).as_slice());
        assert!(
            matches!(error, Err(Error::GgufTooDeep { limit: 8, .. })),
            "{error:?}"
        );
    }

    #[test]
    fn claimed_lengths_reserve_no_memory_before_items_arrive() {
        // Seven levels of 16 M-item arrays in 100 bytes: reserving each claimed length up
        // front asked for 7 × 512 MiB before the first item was found missing.
        let error = GgufMetadata::read(&mut nested(7, 16 << 20).as_slice());
        assert!(matches!(error, Err(Error::GgufRead { .. })), "{error:?}");
        let truncated = file(&[entry("k", 4, &[1, 2])]);
        assert!(matches!(
            GgufMetadata::read(&mut truncated.as_slice()),
            Err(Error::GgufRead { .. })
        ));
    }
}

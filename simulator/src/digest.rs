//! The digest of an applied state: SHA-256 over a compact, unambiguous encoding of its serde
//! data model, fed straight into the hasher. It sees everything `serde_json` would (every
//! field, map entry and value, in serialisation order — all `BTreeMap`s, so the same state
//! gives the same bytes on every node) without formatting text: no escaping, no number
//! printing, no buffer of the whole state. Every value starts with a tag, strings, bytes and
//! names carry their length, sequences and maps end with a tag of their own, so two different
//! values never encode alike.

use serde::ser::{self, Serialize};
use sha2::{Digest, Sha256};

/// SHA-256 of `value`'s encoding (see the module docs), in hex.
pub fn sha256_hex<T: Serialize + ?Sized>(value: &T) -> Result<String, DigestError> {
    let mut hasher = HashSerializer {
        sha: Sha256::new(),
        buf: Vec::with_capacity(BUFFER),
    };
    value.serialize(&mut hasher)?;
    hasher.sha.update(&hasher.buf);
    Ok(hex::encode(hasher.sha.finalize()))
}

/// A value the encoding does not take (only a custom `Serialize` can raise one).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DigestError(String);

impl ser::Error for DigestError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        DigestError(msg.to_string())
    }
}

/// Bytes gathered before they go to the hasher (one call per chunk, not per field).
const BUFFER: usize = 16 * 1024;

struct HashSerializer {
    sha: Sha256,
    buf: Vec<u8>,
}

mod tag {
    pub const BOOL: u8 = 1;
    pub const INT: u8 = 2;
    pub const UINT: u8 = 3;
    pub const FLOAT: u8 = 4;
    pub const CHAR: u8 = 5;
    pub const STR: u8 = 6;
    pub const BYTES: u8 = 7;
    pub const NONE: u8 = 8;
    pub const SOME: u8 = 9;
    pub const UNIT: u8 = 10;
    pub const UNIT_STRUCT: u8 = 11;
    pub const UNIT_VARIANT: u8 = 12;
    pub const NEWTYPE_STRUCT: u8 = 13;
    pub const NEWTYPE_VARIANT: u8 = 14;
    pub const SEQ: u8 = 15;
    pub const TUPLE: u8 = 16;
    pub const TUPLE_STRUCT: u8 = 17;
    pub const TUPLE_VARIANT: u8 = 18;
    pub const MAP: u8 = 19;
    pub const STRUCT: u8 = 20;
    pub const STRUCT_VARIANT: u8 = 21;
    pub const FIELD: u8 = 22;
    pub const SKIPPED: u8 = 23;
    pub const ELEMENT: u8 = 24;
    pub const END: u8 = 25;
}

impl HashSerializer {
    fn write(&mut self, bytes: &[u8]) {
        if self.buf.len() + bytes.len() > BUFFER {
            self.sha.update(&self.buf);
            self.buf.clear();
        }
        if bytes.len() > BUFFER {
            self.sha.update(bytes);
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }

    fn tag(&mut self, t: u8) {
        self.write(&[t]);
    }

    fn len(&mut self, n: usize) {
        self.write(&(n as u64).to_le_bytes());
    }

    fn text(&mut self, s: &str) {
        self.len(s.len());
        self.write(s.as_bytes());
    }

    fn variant(&mut self, t: u8, name: &str, index: u32, variant: &str) {
        self.tag(t);
        self.text(name);
        self.write(&index.to_le_bytes());
        self.text(variant);
    }
}

impl ser::Serializer for &mut HashSerializer {
    type Ok = ();
    type Error = DigestError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, v: bool) -> Result<(), DigestError> {
        self.tag(tag::BOOL);
        self.write(&[u8::from(v)]);
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<(), DigestError> {
        self.serialize_i128(i128::from(v))
    }

    fn serialize_i16(self, v: i16) -> Result<(), DigestError> {
        self.serialize_i128(i128::from(v))
    }

    fn serialize_i32(self, v: i32) -> Result<(), DigestError> {
        self.serialize_i128(i128::from(v))
    }

    fn serialize_i64(self, v: i64) -> Result<(), DigestError> {
        self.serialize_i128(i128::from(v))
    }

    fn serialize_i128(self, v: i128) -> Result<(), DigestError> {
        self.tag(tag::INT);
        self.write(&v.to_le_bytes());
        Ok(())
    }

    fn serialize_u8(self, v: u8) -> Result<(), DigestError> {
        self.serialize_u128(u128::from(v))
    }

    fn serialize_u16(self, v: u16) -> Result<(), DigestError> {
        self.serialize_u128(u128::from(v))
    }

    fn serialize_u32(self, v: u32) -> Result<(), DigestError> {
        self.serialize_u128(u128::from(v))
    }

    fn serialize_u64(self, v: u64) -> Result<(), DigestError> {
        self.serialize_u128(u128::from(v))
    }

    fn serialize_u128(self, v: u128) -> Result<(), DigestError> {
        self.tag(tag::UINT);
        self.write(&v.to_le_bytes());
        Ok(())
    }

    fn serialize_f32(self, v: f32) -> Result<(), DigestError> {
        self.serialize_f64(f64::from(v))
    }

    fn serialize_f64(self, v: f64) -> Result<(), DigestError> {
        self.tag(tag::FLOAT);
        self.write(&v.to_bits().to_le_bytes());
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), DigestError> {
        self.tag(tag::CHAR);
        self.write(&u32::from(v).to_le_bytes());
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), DigestError> {
        self.tag(tag::STR);
        self.text(v);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), DigestError> {
        self.tag(tag::BYTES);
        self.len(v.len());
        self.write(v);
        Ok(())
    }

    fn serialize_none(self) -> Result<(), DigestError> {
        self.tag(tag::NONE);
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), DigestError> {
        self.tag(tag::SOME);
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), DigestError> {
        self.tag(tag::UNIT);
        Ok(())
    }

    fn serialize_unit_struct(self, name: &'static str) -> Result<(), DigestError> {
        self.tag(tag::UNIT_STRUCT);
        self.text(name);
        Ok(())
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<(), DigestError> {
        self.variant(tag::UNIT_VARIANT, name, index, variant);
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), DigestError> {
        self.tag(tag::NEWTYPE_STRUCT);
        self.text(name);
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), DigestError> {
        self.variant(tag::NEWTYPE_VARIANT, name, index, variant);
        value.serialize(self)
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self, DigestError> {
        self.tag(tag::SEQ);
        Ok(self)
    }

    fn serialize_tuple(self, len: usize) -> Result<Self, DigestError> {
        self.tag(tag::TUPLE);
        self.len(len);
        Ok(self)
    }

    fn serialize_tuple_struct(self, name: &'static str, len: usize) -> Result<Self, DigestError> {
        self.tag(tag::TUPLE_STRUCT);
        self.text(name);
        self.len(len);
        Ok(self)
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self, DigestError> {
        self.variant(tag::TUPLE_VARIANT, name, index, variant);
        self.len(len);
        Ok(self)
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self, DigestError> {
        self.tag(tag::MAP);
        Ok(self)
    }

    fn serialize_struct(self, name: &'static str, _len: usize) -> Result<Self, DigestError> {
        self.tag(tag::STRUCT);
        self.text(name);
        Ok(self)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self, DigestError> {
        self.variant(tag::STRUCT_VARIANT, name, index, variant);
        Ok(self)
    }
}

impl HashSerializer {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), DigestError> {
        self.tag(tag::ELEMENT);
        value.serialize(self)
    }

    fn field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), DigestError> {
        self.tag(tag::FIELD);
        self.text(key);
        value.serialize(self)
    }

    fn end(&mut self) -> Result<(), DigestError> {
        self.tag(tag::END);
        Ok(())
    }
}

impl ser::SerializeSeq for &mut HashSerializer {
    type Ok = ();
    type Error = DigestError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), DigestError> {
        self.element(value)
    }

    fn end(self) -> Result<(), DigestError> {
        HashSerializer::end(self)
    }
}

impl ser::SerializeTuple for &mut HashSerializer {
    type Ok = ();
    type Error = DigestError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), DigestError> {
        self.element(value)
    }

    fn end(self) -> Result<(), DigestError> {
        HashSerializer::end(self)
    }
}

impl ser::SerializeTupleStruct for &mut HashSerializer {
    type Ok = ();
    type Error = DigestError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), DigestError> {
        self.element(value)
    }

    fn end(self) -> Result<(), DigestError> {
        HashSerializer::end(self)
    }
}

impl ser::SerializeTupleVariant for &mut HashSerializer {
    type Ok = ();
    type Error = DigestError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), DigestError> {
        self.element(value)
    }

    fn end(self) -> Result<(), DigestError> {
        HashSerializer::end(self)
    }
}

impl ser::SerializeMap for &mut HashSerializer {
    type Ok = ();
    type Error = DigestError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), DigestError> {
        self.element(key)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), DigestError> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), DigestError> {
        HashSerializer::end(self)
    }
}

impl ser::SerializeStruct for &mut HashSerializer {
    type Ok = ();
    type Error = DigestError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), DigestError> {
        self.field(key, value)
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), DigestError> {
        self.tag(tag::SKIPPED);
        self.text(key);
        Ok(())
    }

    fn end(self) -> Result<(), DigestError> {
        HashSerializer::end(self)
    }
}

impl ser::SerializeStructVariant for &mut HashSerializer {
    type Ok = ();
    type Error = DigestError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), DigestError> {
        self.field(key, value)
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), DigestError> {
        self.tag(tag::SKIPPED);
        self.text(key);
        Ok(())
    }

    fn end(self) -> Result<(), DigestError> {
        HashSerializer::end(self)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Serialize;

    use super::*;

    #[derive(Serialize)]
    struct Pair {
        a: String,
        b: Option<u64>,
    }

    #[test]
    fn equal_values_digest_alike_and_every_difference_shows() {
        let one = Pair {
            a: "x".into(),
            b: Some(1),
        };
        assert_eq!(
            d(&one),
            d(&Pair {
                a: "x".into(),
                b: Some(1)
            })
        );
        for other in [
            Pair {
                a: "x".into(),
                b: Some(2),
            },
            Pair {
                a: "x".into(),
                b: None,
            },
            Pair {
                a: "y".into(),
                b: Some(1),
            },
        ] {
            assert_ne!(d(&one), d(&other));
        }
        // Lengths keep boundaries apart: ["ab", "c"] is not ["a", "bc"].
        assert_ne!(d(&vec!["ab", "c"]), d(&vec!["a", "bc"]));
        // A map entry moved into the next one's key shows.
        let m1: BTreeMap<&str, &str> = [("a", "b"), ("c", "d")].into();
        let m2: BTreeMap<&str, &str> = [("a", "bc"), ("", "d")].into();
        assert_ne!(d(&m1), d(&m2));
        // Types matter: 1u64 and "1".
        assert_ne!(d(&1u64), d(&"1"));
        assert_eq!(d(&1u64).len(), 64);
    }

    fn d<T: Serialize + ?Sized>(value: &T) -> String {
        sha256_hex(value).expect("encodes")
    }
}

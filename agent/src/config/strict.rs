//! Deserializing YAML straight into wire types, accepting no more than the
//! `serde_yaml::Value` path does.
//!
//! The general path reads each document into a [`serde_yaml::Value`] and then
//! decodes the wire type from it: a tree of allocations per document that is
//! thrown away at once, and at 50,000 routes most of the start-up. Decoding
//! the wire type from the parser directly is not the same thing, though:
//! serde_yaml's own string visitor takes a plain `123`, `true` or `null` as a
//! string, where the `Value` path (like Kubernetes) refuses it, and a
//! duplicated key is refused by `Value` but not by a derived struct.
//!
//! [`Strict`] wraps the parser so that every request is answered as the
//! `Value` path answers it: each scalar is resolved the way `Value` resolves
//! it (null, bool, number or string), and only a resolution the `Value`
//! decoding would accept for the requested type is passed on; mappings with a
//! repeated key or a key that is not a string are refused. Anything it refuses
//! is an error, and its callers then take the `Value` path, which gives the
//! authoritative verdict and its usual error messages. So on success the
//! result is the one the `Value` path gives; on anything unusual the `Value`
//! path decides. Tags (`!x`) are not handled here at all: callers do not use
//! this on text containing `!`.
use std::fmt;

use serde::de::{
    self,
    value::{BorrowedStrDeserializer, StrDeserializer, StringDeserializer},
    DeserializeSeed, Deserializer, MapAccess, SeqAccess, Unexpected, Visitor,
};

/// A deserializer answering like the `Value` path; see the module docs.
pub(super) struct Strict<D>(pub D);

/// What the caller asked for, and so which resolutions of a node are passed on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Anything, as `Value` holds it (e.g. a `Value` field).
    Any,
    Bool,
    /// Any integer or float type: `Value` hands on its number as such.
    Number,
    /// A string, a char or a field name: only a string node.
    Str,
    Unit,
    /// A unit variant named by a string node (the only enum form `Value`
    /// decodes without a tag).
    Enum,
    Seq,
    Map,
}

/// Passes on only the resolutions of a node that `Value` would decode as `want`.
struct Filter<V> {
    want: Want,
    visitor: V,
}

impl<V> Filter<V> {
    fn takes(&self, wants: &[Want]) -> bool {
        self.want == Want::Any || wants.contains(&self.want)
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Filter<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<V::Value, E> {
        if self.takes(&[Want::Bool]) {
            self.visitor.visit_bool(v)
        } else {
            Err(E::invalid_type(Unexpected::Bool(v), &self))
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<V::Value, E> {
        if self.takes(&[Want::Number]) {
            self.visitor.visit_u64(v)
        } else {
            Err(E::invalid_type(Unexpected::Unsigned(v), &self))
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<V::Value, E> {
        if self.takes(&[Want::Number]) {
            self.visitor.visit_i64(v)
        } else {
            Err(E::invalid_type(Unexpected::Signed(v), &self))
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<V::Value, E> {
        if self.takes(&[Want::Number]) {
            self.visitor.visit_f64(v)
        } else {
            Err(E::invalid_type(Unexpected::Float(v), &self))
        }
    }

    // Integers beyond 64 bits: `Value` cannot hold them (its visitor refuses
    // them), so neither does this; serde's default refusal applies.

    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        match self.want {
            Want::Any | Want::Str => self.visitor.visit_str(v),
            Want::Enum => self.visitor.visit_enum(StrDeserializer::<E>::new(v)),
            _ => Err(E::invalid_type(Unexpected::Str(v), &self)),
        }
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<V::Value, E> {
        match self.want {
            Want::Any | Want::Str => self.visitor.visit_borrowed_str(v),
            Want::Enum => self
                .visitor
                .visit_enum(BorrowedStrDeserializer::<E>::new(v)),
            _ => Err(E::invalid_type(Unexpected::Str(v), &self)),
        }
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<V::Value, E> {
        match self.want {
            Want::Any | Want::Str => self.visitor.visit_string(v),
            Want::Enum => self.visitor.visit_enum(StringDeserializer::<E>::new(v)),
            _ => Err(E::invalid_type(Unexpected::Str(&v), &self)),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        if self.takes(&[Want::Unit]) {
            self.visitor.visit_unit()
        } else {
            Err(E::invalid_type(Unexpected::Unit, &self))
        }
    }

    /// The parser's answer for a missing node: `Value` holds it as null.
    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.visit_unit()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        if self.takes(&[Want::Seq]) {
            self.visitor.visit_seq(StrictSeq(seq))
        } else {
            Err(de::Error::invalid_type(Unexpected::Seq, &self))
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        if self.takes(&[Want::Map]) {
            self.visitor.visit_map(StrictMap {
                map,
                keys: Vec::new(),
            })
        } else {
            Err(de::Error::invalid_type(Unexpected::Map, &self))
        }
    }
}

/// `Option`: `Value`'s null is `None`, anything else `Some`. Without tags the
/// parser's test (an empty or null plain scalar) is exactly `Value`'s null.
struct OptionFilter<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for OptionFilter<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_none()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_some(Strict(d))
    }
}

impl<'de, D: Deserializer<'de>> Strict<D> {
    fn resolve<V: Visitor<'de>>(self, want: Want, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(Filter { want, visitor })
    }
}

macro_rules! resolve {
    ($want:ident: $($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
                self.resolve(Want::$want, visitor)
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Strict<D> {
    type Error = D::Error;

    resolve!(Any: deserialize_any);
    resolve!(Bool: deserialize_bool);
    resolve!(Number: deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64);
    resolve!(Str: deserialize_char deserialize_str deserialize_string deserialize_identifier);
    resolve!(Unit: deserialize_unit);

    fn deserialize_bytes<V: Visitor<'de>>(self, _: V) -> Result<V::Value, D::Error> {
        Err(de::Error::custom("bytes are read on the Value path only"))
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, _: V) -> Result<V::Value, D::Error> {
        Err(de::Error::custom("bytes are read on the Value path only"))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_option(OptionFilter(visitor))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.resolve(Want::Unit, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        visitor.visit_newtype_struct(self)
    }

    // Sequences and mappings: the parser's own request takes a sequence
    // (mapping) or an empty plain scalar, a subset of what `Value` takes
    // (it also takes `null` and `~`); the rest is left to the `Value` path.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_seq(Filter {
            want: Want::Seq,
            visitor,
        })
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(Filter {
            want: Want::Map,
            visitor,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.resolve(Want::Enum, visitor)
    }

    /// An ignored node is read into a `Value` and dropped, so that it is
    /// refused exactly when the `Value` path would refuse it (a repeated key,
    /// an integer beyond 64 bits).
    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        <serde_yaml::Value as de::Deserialize>::deserialize(self.0)?;
        visitor.visit_unit()
    }
}

/// The elements of a sequence, each through [`Strict`].
struct StrictSeq<A>(A);

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for StrictSeq<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(Seeded(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

/// A seed whose deserializer is wrapped in [`Strict`].
struct Seeded<T>(T);

impl<'de, T: DeserializeSeed<'de>> DeserializeSeed<'de> for Seeded<T> {
    type Value = T::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T::Value, D::Error> {
        self.0.deserialize(Strict(d))
    }
}

/// The entries of a mapping: keys must be strings (as `Value` decodes a field
/// name or a `String` key) and distinct (as `Value` builds its mapping).
struct StrictMap<'de, A> {
    map: A,
    /// The keys so far; mappings here are small, so a scan beats hashing.
    keys: Vec<Key<'de>>,
}

#[derive(PartialEq, Eq)]
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

/// Reads a key: only a string node is one.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key<'de>, D::Error> {
        d.deserialize_any(KeySeed)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
        Ok(Key::Owned(v))
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for StrictMap<'de, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let Some(key) = self.map.next_key_seed(KeySeed)? else {
            return Ok(None);
        };
        if self.keys.iter().any(|k| k.as_str() == key.as_str()) {
            return Err(de::Error::custom(format_args!(
                "duplicate entry with key {:?}",
                key.as_str()
            )));
        }
        let value = match &key {
            Key::Borrowed(s) => seed.deserialize(BorrowedStrDeserializer::<A::Error>::new(s)),
            Key::Owned(s) => seed.deserialize(StrDeserializer::<A::Error>::new(s)),
        }?;
        self.keys.push(key);
        Ok(Some(value))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.map.next_value_seed(Seeded(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

/// Decodes one YAML document of `text` into `T` without a `Value` tree, or
/// `None` when anything about it is not exactly as the `Value` path would
/// accept it (the caller then takes that path). Text with a tag indicator
/// (`!`) anywhere is left to the `Value` path whole.
#[cfg(test)]
pub(super) fn decode<T: de::DeserializeOwned>(text: &str) -> Option<T> {
    if text.contains('!') {
        return None;
    }
    decode_from(serde_yaml::Deserializer::from_str(text))
}

/// [`decode`] from a parser: one document of a stream, which the caller has
/// made sure holds no tag.
pub(super) fn decode_from<'de, T: de::Deserialize<'de>, D: Deserializer<'de>>(
    document: D,
) -> Option<T> {
    T::deserialize(Strict(document)).ok()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::decode;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Doc {
        name: String,
        #[serde(default)]
        port: Option<u16>,
        #[serde(default)]
        on: Option<bool>,
        #[serde(default)]
        list: Vec<String>,
        #[serde(default)]
        labels: BTreeMap<String, String>,
        #[serde(default)]
        kind: Option<Kind>,
        #[serde(default)]
        extra: Option<serde_yaml::Value>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    enum Kind {
        Exact,
        PathPrefix,
    }

    /// What the `Value` path makes of `text`.
    fn by_value(text: &str) -> Option<Doc> {
        let value: serde_yaml::Value = serde_yaml::from_str(text).ok()?;
        serde_yaml::from_value(value).ok()
    }

    /// Both paths agree; returns the verdict.
    fn agree(text: &str) -> Option<Doc> {
        let direct = decode::<Doc>(text);
        let value = by_value(text);
        if let Some(d) = &direct {
            assert_eq!(Some(d), value.as_ref(), "{text:?}");
        }
        direct
    }

    #[test]
    fn strings_must_be_strings() {
        for bad in ["123", "true", "null", "1.5", "~", "0x1F", "-7", "", ".inf"] {
            let text = format!("name: {bad}\n");
            assert_eq!(agree(&text), None, "{text:?}");
            assert!(by_value(&text).is_none(), "{text:?}");
        }
        for good in [
            "abc",
            "\"123\"",
            "'true'",
            "\"\"",
            "a b",
            "\"*.example.com\"",
        ] {
            let text = format!("name: {good}\n");
            assert!(agree(&text).is_some(), "{text:?}");
        }
        assert_eq!(agree("name: \"123\"\n").unwrap().name, "123");
        assert_eq!(agree("list: [a, 1]\nname: x\n"), None);
        assert_eq!(agree("labels: {a: 1}\nname: x\n"), None);
        assert_eq!(agree("labels: {1: a}\nname: x\n"), None);
    }

    #[test]
    fn numbers_and_bools_as_value_has_them() {
        let d = agree("name: x\nport: 0x50\non: true\n").unwrap();
        assert_eq!((d.port, d.on), (Some(80), Some(true)));
        for bad in ["\"80\"", "-1", "70000", "8.0", "true", "1e400"] {
            assert_eq!(agree(&format!("name: x\nport: {bad}\n")), None, "{bad}");
        }
        assert_eq!(agree("name: x\non: \"true\"\n"), None);
        assert_eq!(agree("name: x\non: 1\n"), None);
    }

    #[test]
    fn nulls_options_and_empties() {
        let d = agree("name: x\nport: ~\nlist:\nkind: null\n").unwrap();
        assert_eq!((d.port, d.list.len(), d.kind), (None, 0, None));
        // `Value` takes a null list as empty; this leaves it to that path.
        assert_eq!(decode::<Doc>("name: x\nlist: null\n"), None);
        assert!(by_value("name: x\nlist: null\n").is_some());
    }

    #[test]
    fn repeated_and_odd_keys_are_left_to_the_value_path() {
        for text in [
            "name: x\nname: y\n",
            "name: x\nlabels: {a: b, a: c}\n",
            "name: x\nunknown: 1\nunknown: 2\n",
            "name: x\nunknown: {a: 1, \"a\": 2}\n",
            "name: x\nunknown: 18446744073709551616\n",
            "name: x\n! tagged: 1\n",
            "name: !custom x\n",
        ] {
            assert_eq!(agree(text), None, "{text:?}");
        }
    }

    #[test]
    fn enums_and_values() {
        let d = agree("name: x\nkind: Exact\nextra: {a: [1, b], c: null}\n").unwrap();
        assert_eq!(d.kind, Some(Kind::Exact));
        assert!(d.extra.is_some());
        assert_eq!(agree("name: x\nkind: {Exact: 1}\n"), None);
        assert_eq!(agree("name: x\nkind: Nope\n"), None);
        // Aliases resolve as on the Value path.
        let d = agree("name: &n x\nlabels: {a: *n}\n").unwrap();
        assert_eq!(d.labels["a"], "x");
    }

    #[test]
    fn more_than_one_document_is_left_to_the_value_path() {
        assert_eq!(decode::<Doc>("name: x\n---\nname: y\n"), None);
        assert_eq!(decode::<Doc>("name: x\n...\nname: y\n"), None);
    }
}

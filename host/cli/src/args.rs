//! Typed task arguments on the command line: a function's parameter and result types are read
//! from the signature its module reports (such as `add(a: f64, b: f64) -> f64`); arguments given
//! as JSON are checked against them and encoded with postcard, and results are decoded back to
//! JSON. Raw `&[u8]` parameters take bytes as they are.

use std::fmt;

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, SerializeTuple};
use serde::{Serialize, Serializer};
use serde_json::Value;

/// A Rust type as it appears in a task signature, reduced to what determines its postcard
/// encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Type {
    /// `bool`.
    Bool,
    /// An unsigned integer of this many bits (`usize` counts as 64).
    Unsigned(u32),
    /// A signed integer of this many bits (`isize` counts as 64).
    Signed(u32),
    /// `f32`.
    F32,
    /// `f64`.
    F64,
    /// `char`.
    Char,
    /// `String`, `&str`.
    String,
    /// `&[u8]` in a raw function: bytes passed as they are, not encoded.
    RawBytes,
    /// `Vec<T>`, `&[T]`, `VecDeque<T>`: a length-prefixed sequence.
    List(Box<Type>),
    /// `[T; N]`: exactly N elements, no length prefix.
    Array(Box<Type>, usize),
    /// `Option<T>`.
    Option(Box<Type>),
    /// `(A, B, ...)`.
    Tuple(Vec<Type>),
    /// `()`.
    Unit,
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Bool => f.write_str("bool"),
            Type::Unsigned(bits) => write!(f, "u{bits}"),
            Type::Signed(bits) => write!(f, "i{bits}"),
            Type::F32 => f.write_str("f32"),
            Type::F64 => f.write_str("f64"),
            Type::Char => f.write_str("char"),
            Type::String => f.write_str("String"),
            Type::RawBytes => f.write_str("&[u8]"),
            Type::List(t) => write!(f, "Vec<{t}>"),
            Type::Array(t, n) => write!(f, "[{t}; {n}]"),
            Type::Option(t) => write!(f, "Option<{t}>"),
            Type::Tuple(ts) => {
                f.write_str("(")?;
                for (i, t) in ts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{t}")?;
                }
                if ts.len() == 1 {
                    f.write_str(",")?;
                }
                f.write_str(")")
            }
            Type::Unit => f.write_str("()"),
        }
    }
}

/// A parsed task signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The parameters: name and type.
    pub params: Vec<(String, Type)>,
    /// The result type (the `Ok` type of a `Result`).
    pub result: Type,
    /// Whether this is a raw function: bytes in, bytes out, nothing encoded. Recognised by its
    /// parameters all being `&[u8]` and its result `Vec<u8>`.
    pub raw: bool,
}

/// Parses a signature such as `add(a: f64, b: f64) -> f64`.
pub fn parse_signature(signature: &str) -> Result<Signature, String> {
    let open = signature
        .find('(')
        .ok_or_else(|| format!("no parameter list in signature {signature:?}"))?;
    let close = matching(signature, open)
        .ok_or_else(|| format!("unbalanced parentheses in signature {signature:?}"))?;
    let params_text = &signature[open + 1..close];
    let mut params = Vec::new();
    for param in split_top_level(params_text) {
        let param = param.trim();
        if param.is_empty() {
            continue;
        }
        let (name, ty) = param
            .split_once(':')
            .ok_or_else(|| format!("parameter {param:?} has no type"))?;
        let ty = parse_type(ty).map_err(|e| format!("parameter {}: {e}", name.trim()))?;
        params.push((name.trim().to_owned(), ty));
    }
    let rest = signature[close + 1..].trim();
    let result = match rest.strip_prefix("->") {
        Some(ret) => parse_result_type(ret).map_err(|e| format!("result: {e}"))?,
        None if rest.is_empty() => Type::Unit,
        None => return Err(format!("unexpected {rest:?} after the parameters")),
    };
    let raw = params.iter().all(|(_, t)| *t == Type::RawBytes)
        && result == Type::List(Box::new(Type::Unsigned(8)));
    Ok(Signature {
        params,
        result,
        raw,
    })
}

fn matching(text: &str, open: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (i, c) in text[open..].char_indices() {
        match c {
            '(' | '<' | '[' => depth += 1,
            ')' | '>' | ']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
    }
    None
}

fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' | '<' | '[' => depth += 1,
            ')' | '>' | ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Parses a result type: `Result<T, E>` means `T` (the error travels as a task error).
fn parse_result_type(text: &str) -> Result<Type, String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let last = compact.rsplit("::").next().unwrap_or(&compact);
    if let Some(inner) = last
        .strip_prefix("Result<")
        .and_then(|s| s.strip_suffix('>'))
    {
        let parts = split_top_level(inner);
        return parse_type(parts[0]);
    }
    parse_type(text)
}

/// Parses one Rust type.
pub fn parse_type(text: &str) -> Result<Type, String> {
    // Whitespace carries no meaning in the types we support; lifetimes and `mut` are dropped.
    let text = strip_lifetimes(text);
    let words: Vec<&str> = text.split_whitespace().filter(|w| *w != "mut").collect();
    let compact: String = words.concat();
    parse_compact(&compact).map_err(|e| {
        if e.is_empty() {
            format!("unsupported type {:?}", text.trim())
        } else {
            e
        }
    })
}

fn strip_lifetimes(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            while chars
                .peek()
                .is_some_and(|c| c.is_alphanumeric() || *c == '_')
            {
                chars.next();
            }
            if chars.peek() == Some(&',') {
                chars.next();
            }
        } else {
            out.push(c);
        }
    }
    out.replace("<>", "")
}

fn parse_compact(t: &str) -> Result<Type, String> {
    if let Some(inner) = t.strip_prefix('&') {
        if inner == "[u8]" {
            return Ok(Type::RawBytes);
        }
        if let Some(elem) = inner.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            return Ok(Type::List(Box::new(parse_compact(elem)?)));
        }
        return parse_compact(inner);
    }
    if let Some(inner) = t.strip_prefix('(').and_then(|s| s.strip_suffix(')')) {
        if inner.is_empty() {
            return Ok(Type::Unit);
        }
        let parts: Vec<&str> = split_top_level(inner);
        let trailing_comma = parts.last().is_some_and(|p| p.is_empty());
        let parts: Vec<&str> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        if parts.len() == 1 && !trailing_comma {
            return parse_compact(parts[0]);
        }
        return Ok(Type::Tuple(
            parts
                .into_iter()
                .map(parse_compact)
                .collect::<Result<_, _>>()?,
        ));
    }
    if let Some(inner) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        let parts = split_top_level_semicolon(inner);
        return match parts {
            (elem, Some(len)) => {
                let len: usize = len
                    .parse()
                    .map_err(|_| format!("array length {len:?} is not a number"))?;
                Ok(Type::Array(Box::new(parse_compact(elem)?), len))
            }
            (elem, None) => Ok(Type::List(Box::new(parse_compact(elem)?))),
        };
    }
    // A path with optional generic arguments: only the last segment matters.
    let (path, generics) = match t.find('<') {
        Some(i) if t.ends_with('>') => (&t[..i], Some(&t[i + 1..t.len() - 1])),
        Some(_) => return Err(String::new()),
        None => (t, None),
    };
    let name = path.rsplit("::").next().unwrap_or(path);
    let one_arg = |generics: Option<&str>| -> Result<Type, String> {
        let args = generics.map(split_top_level).unwrap_or_default();
        match args.as_slice() {
            [arg] => parse_compact(arg),
            _ => Err(format!("{name} takes one type argument")),
        }
    };
    Ok(match (name, generics) {
        ("bool", None) => Type::Bool,
        ("u8", None) => Type::Unsigned(8),
        ("u16", None) => Type::Unsigned(16),
        ("u32", None) => Type::Unsigned(32),
        ("u64" | "usize", None) => Type::Unsigned(64),
        ("u128", None) => Type::Unsigned(128),
        ("i8", None) => Type::Signed(8),
        ("i16", None) => Type::Signed(16),
        ("i32", None) => Type::Signed(32),
        ("i64" | "isize", None) => Type::Signed(64),
        ("i128", None) => Type::Signed(128),
        ("f32", None) => Type::F32,
        ("f64", None) => Type::F64,
        ("char", None) => Type::Char,
        ("String" | "str", None) => Type::String,
        ("Vec" | "VecDeque", g) => Type::List(Box::new(one_arg(g)?)),
        ("Option", g) => Type::Option(Box::new(one_arg(g)?)),
        ("Box" | "Rc" | "Arc", g) => one_arg(g)?,
        _ => return Err(String::new()),
    })
}

fn split_top_level_semicolon(text: &str) -> (&str, Option<&str>) {
    let mut depth = 0i32;
    for (i, c) in text.char_indices() {
        match c {
            '(' | '<' | '[' => depth += 1,
            ')' | '>' | ']' => depth -= 1,
            ';' if depth == 0 => return (&text[..i], Some(&text[i + 1..])),
            _ => {}
        }
    }
    (text, None)
}

/// A JSON value checked against a [`Type`], ready to encode.
#[derive(Debug)]
enum Typed {
    Bool(bool),
    Unsigned(u128, u32),
    Signed(i128, u32),
    F32(f32),
    F64(f64),
    Char(char),
    Str(String),
    Seq(Vec<Typed>),
    Tuple(Vec<Typed>),
    None,
    Some(Box<Typed>),
    Unit,
}

impl Serialize for Typed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Typed::Bool(v) => s.serialize_bool(*v),
            Typed::Unsigned(v, 8) => s.serialize_u8(*v as u8),
            Typed::Unsigned(v, 16) => s.serialize_u16(*v as u16),
            Typed::Unsigned(v, 32) => s.serialize_u32(*v as u32),
            Typed::Unsigned(v, 64) => s.serialize_u64(*v as u64),
            Typed::Unsigned(v, _) => s.serialize_u128(*v),
            Typed::Signed(v, 8) => s.serialize_i8(*v as i8),
            Typed::Signed(v, 16) => s.serialize_i16(*v as i16),
            Typed::Signed(v, 32) => s.serialize_i32(*v as i32),
            Typed::Signed(v, 64) => s.serialize_i64(*v as i64),
            Typed::Signed(v, _) => s.serialize_i128(*v),
            Typed::F32(v) => s.serialize_f32(*v),
            Typed::F64(v) => s.serialize_f64(*v),
            Typed::Char(v) => s.serialize_char(*v),
            Typed::Str(v) => s.serialize_str(v),
            Typed::Seq(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Typed::Tuple(items) => {
                let mut tuple = s.serialize_tuple(items.len())?;
                for item in items {
                    tuple.serialize_element(item)?;
                }
                tuple.end()
            }
            Typed::None => s.serialize_none(),
            Typed::Some(v) => s.serialize_some(v),
            Typed::Unit => s.serialize_unit(),
        }
    }
}

fn describe(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 60 {
        format!("{}...", &text[..text.floor_char_boundary(57)])
    } else {
        text
    }
}

fn check(ty: &Type, value: &Value) -> Result<Typed, String> {
    let mismatch = || format!("expected {ty}, got {}", describe(value));
    Ok(match ty {
        Type::Bool => Typed::Bool(value.as_bool().ok_or_else(mismatch)?),
        Type::Unsigned(bits) => {
            let v: u128 = match value {
                Value::Number(n) => n.as_u64().map(u128::from).ok_or_else(mismatch)?,
                Value::String(s) => s.parse().map_err(|_| mismatch())?,
                _ => return Err(mismatch()),
            };
            if *bits < 128 && v >> bits != 0 {
                return Err(format!("{v} does not fit in {ty}"));
            }
            Typed::Unsigned(v, *bits)
        }
        Type::Signed(bits) => {
            let v: i128 = match value {
                Value::Number(n) => n.as_i64().map(i128::from).ok_or_else(mismatch)?,
                Value::String(s) => s.parse().map_err(|_| mismatch())?,
                _ => return Err(mismatch()),
            };
            if *bits < 128 {
                let max = (1i128 << (bits - 1)) - 1;
                if v > max || v < -max - 1 {
                    return Err(format!("{v} does not fit in {ty}"));
                }
            }
            Typed::Signed(v, *bits)
        }
        Type::F32 | Type::F64 => {
            let v = match value {
                Value::Number(n) => n.as_f64().ok_or_else(mismatch)?,
                Value::String(s) => s.parse::<f64>().map_err(|_| mismatch())?,
                _ => return Err(mismatch()),
            };
            if *ty == Type::F32 {
                Typed::F32(v as f32)
            } else {
                Typed::F64(v)
            }
        }
        Type::Char => {
            let s = value.as_str().ok_or_else(mismatch)?;
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Typed::Char(c),
                _ => return Err(mismatch()),
            }
        }
        Type::String => Typed::Str(value.as_str().ok_or_else(mismatch)?.to_owned()),
        Type::RawBytes => return Err("raw bytes cannot be given as JSON".into()),
        Type::List(elem) => {
            let items = value.as_array().ok_or_else(mismatch)?;
            Typed::Seq(check_items(items.iter().map(|v| (elem.as_ref(), v)))?)
        }
        Type::Array(elem, len) => {
            let items = value.as_array().ok_or_else(mismatch)?;
            if items.len() != *len {
                return Err(format!("expected {len} elements, got {}", items.len()));
            }
            Typed::Tuple(check_items(items.iter().map(|v| (elem.as_ref(), v)))?)
        }
        Type::Tuple(types) => {
            let items = value.as_array().ok_or_else(mismatch)?;
            if items.len() != types.len() {
                return Err(format!(
                    "expected {ty} ({} elements), got {}",
                    types.len(),
                    items.len()
                ));
            }
            Typed::Tuple(check_items(types.iter().zip(items))?)
        }
        Type::Option(inner) => match value {
            Value::Null => Typed::None,
            v => Typed::Some(Box::new(check(inner, v)?)),
        },
        Type::Unit => match value {
            Value::Null => Typed::Unit,
            _ => return Err(mismatch()),
        },
    })
}

fn check_items<'a>(
    items: impl Iterator<Item = (&'a Type, &'a Value)>,
) -> Result<Vec<Typed>, String> {
    items
        .enumerate()
        .map(|(i, (ty, v))| check(ty, v).map_err(|e| format!("element {i}: {e}")))
        .collect()
}

/// Encodes one command-line argument for a parameter of type `ty`.
///
/// Raw `&[u8]` parameters take `@FILE` (the file's bytes) or the text itself. Typed parameters
/// take a JSON value; a `String` or `char` parameter also takes bare text that is not a JSON
/// string (so `hello` works as well as `'"hello"'`).
pub fn encode_arg(ty: &Type, text: &str) -> Result<Vec<u8>, String> {
    if *ty == Type::RawBytes {
        return raw_arg(text);
    }
    let value = match serde_json::from_str::<Value>(text) {
        Ok(Value::String(s)) => Value::String(s),
        Ok(_) | Err(_) if matches!(ty, Type::String | Type::Char) => Value::String(text.to_owned()),
        Ok(v) => v,
        Err(e) => return Err(format!("{text:?} is not a JSON value ({e})")),
    };
    let typed = check(ty, &value)?;
    postcard::to_allocvec(&typed).map_err(|e| format!("cannot encode {text:?}: {e}"))
}

/// The bytes of a raw argument: `@FILE` reads the file, anything else is taken as text.
pub fn raw_arg(text: &str) -> Result<Vec<u8>, String> {
    match text.strip_prefix('@') {
        Some(path) => std::fs::read(path).map_err(|e| format!("reading {path}: {e}")),
        None => Ok(text.as_bytes().to_vec()),
    }
}

/// Decodes a postcard-encoded result of type `ty` into JSON.
pub fn decode_result(ty: &Type, bytes: &[u8]) -> Result<Value, String> {
    let mut de = postcard::Deserializer::from_bytes(bytes);
    let value = Seed(ty)
        .deserialize(&mut de)
        .map_err(|e| format!("cannot decode the result as {ty}: {e}"))?;
    let rest = de
        .finalize()
        .map_err(|e| format!("cannot decode the result as {ty}: {e}"))?;
    if !rest.is_empty() {
        return Err(format!(
            "cannot decode the result as {ty}: {} bytes left over",
            rest.len()
        ));
    }
    Ok(value)
}

/// Deserializes a value of a known [`Type`] into JSON.
struct Seed<'a>(&'a Type);

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        let v = ToJson(self.0);
        match self.0 {
            Type::Bool => d.deserialize_bool(v),
            Type::Unsigned(8) => d.deserialize_u8(v),
            Type::Unsigned(16) => d.deserialize_u16(v),
            Type::Unsigned(32) => d.deserialize_u32(v),
            Type::Unsigned(64) => d.deserialize_u64(v),
            Type::Unsigned(_) => d.deserialize_u128(v),
            Type::Signed(8) => d.deserialize_i8(v),
            Type::Signed(16) => d.deserialize_i16(v),
            Type::Signed(32) => d.deserialize_i32(v),
            Type::Signed(64) => d.deserialize_i64(v),
            Type::Signed(_) => d.deserialize_i128(v),
            Type::F32 => d.deserialize_f32(v),
            Type::F64 => d.deserialize_f64(v),
            Type::Char => d.deserialize_char(v),
            Type::String => d.deserialize_string(v),
            Type::RawBytes | Type::List(_) => d.deserialize_seq(v),
            Type::Array(_, n) => d.deserialize_tuple(*n, v),
            Type::Tuple(ts) => d.deserialize_tuple(ts.len(), v),
            Type::Option(_) => d.deserialize_option(v),
            Type::Unit => d.deserialize_unit(v),
        }
    }
}

struct ToJson<'a>(&'a Type);

impl<'de> Visitor<'de> for ToJson<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a value of type {}", self.0)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
        Ok(u64::try_from(v)
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(v.to_string())))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(i64::try_from(v)
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(v.to_string())))
    }
    fn visit_f32<E>(self, v: f32) -> Result<Value, E> {
        Ok(float(f64::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(float(v))
    }
    fn visit_char<E>(self, v: char) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self.0 {
            Type::Option(inner) => Seed(inner).deserialize(d),
            _ => Err(de::Error::custom("unexpected option")),
        }
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        match self.0 {
            Type::RawBytes => {
                while let Some(v) = seq.next_element_seed(Seed(&Type::Unsigned(8)))? {
                    items.push(v);
                }
            }
            Type::List(elem) | Type::Array(elem, _) => {
                while let Some(v) = seq.next_element_seed(Seed(elem))? {
                    items.push(v);
                }
            }
            Type::Tuple(types) => {
                for ty in types {
                    match seq.next_element_seed(Seed(ty))? {
                        Some(v) => items.push(v),
                        None => return Err(de::Error::custom("tuple too short")),
                    }
                }
            }
            _ => return Err(de::Error::custom("unexpected sequence")),
        }
        Ok(Value::Array(items))
    }
}

/// JSON has no NaN or infinities: those become strings.
fn float(v: f64) -> Value {
    serde_json::Number::from_f64(v)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_parse() {
        let s = parse_signature("add(a: f64, b: f64) -> f64").unwrap();
        assert_eq!(
            s.params,
            vec![("a".into(), Type::F64), ("b".into(), Type::F64)]
        );
        assert_eq!(s.result, Type::F64);
        assert!(!s.raw);
        let s = parse_signature("echo(data: &[u8]) -> Vec<u8>").unwrap();
        assert!(s.raw);
        let s = parse_signature("echo(data : & [u8]) -> Vec < u8 >").unwrap();
        assert!(s.raw);
        let s = parse_signature("noop() -> Vec<u8>").unwrap();
        assert!(s.raw && s.params.is_empty());
        let s = parse_signature("fail(message: String) -> Result<u64, String>").unwrap();
        assert_eq!(s.result, Type::Unsigned(64));
        let s = parse_signature("f(x: Option<Vec<(u8, &'a str)>>, y: [i32; 3])").unwrap();
        assert_eq!(
            s.params[0].1,
            Type::Option(Box::new(Type::List(Box::new(Type::Tuple(vec![
                Type::Unsigned(8),
                Type::String
            ])))))
        );
        assert_eq!(s.params[1].1, Type::Array(Box::new(Type::Signed(32)), 3));
        assert_eq!(s.result, Type::Unit);
        assert!(parse_signature("g(x: HashMap<String, u8>) -> u8").is_err());
    }

    #[test]
    fn arguments_encode_like_serde_does() {
        assert_eq!(
            encode_arg(&Type::F64, "1.5").unwrap(),
            postcard::to_allocvec(&1.5f64).unwrap()
        );
        assert_eq!(
            encode_arg(&Type::Signed(64), "-7").unwrap(),
            postcard::to_allocvec(&-7i64).unwrap()
        );
        assert_eq!(
            encode_arg(&Type::String, "hello").unwrap(),
            postcard::to_allocvec("hello").unwrap()
        );
        assert_eq!(
            encode_arg(&Type::String, "\"hi\"").unwrap(),
            postcard::to_allocvec("hi").unwrap()
        );
        assert_eq!(
            encode_arg(&Type::String, "12").unwrap(),
            postcard::to_allocvec("12").unwrap()
        );
        let list = Type::List(Box::new(Type::F64));
        assert_eq!(
            encode_arg(&list, "[1, 2.5]").unwrap(),
            postcard::to_allocvec(&vec![1.0f64, 2.5]).unwrap()
        );
        let opt = Type::Option(Box::new(Type::Tuple(vec![Type::Bool, Type::Unsigned(16)])));
        assert_eq!(
            encode_arg(&opt, "[true, 300]").unwrap(),
            postcard::to_allocvec(&Some((true, 300u16))).unwrap()
        );
        assert!(
            encode_arg(&Type::Unsigned(8), "300")
                .unwrap_err()
                .contains("does not fit")
        );
        assert!(
            encode_arg(&Type::F64, "abc")
                .unwrap_err()
                .contains("not a JSON value")
        );
        assert!(
            encode_arg(&Type::Bool, "1")
                .unwrap_err()
                .contains("expected bool")
        );
        assert_eq!(encode_arg(&Type::RawBytes, "abc").unwrap(), b"abc");
    }

    #[test]
    fn results_decode_to_json() {
        let bytes = postcard::to_allocvec(&vec![(1u32, "a".to_string())]).unwrap();
        let ty = Type::List(Box::new(Type::Tuple(vec![
            Type::Unsigned(32),
            Type::String,
        ])));
        assert_eq!(
            decode_result(&ty, &bytes).unwrap(),
            serde_json::json!([[1, "a"]])
        );
        let bytes = postcard::to_allocvec(&3.5f64).unwrap();
        assert_eq!(
            decode_result(&Type::F64, &bytes).unwrap(),
            serde_json::json!(3.5)
        );
        assert!(decode_result(&Type::F64, &[1, 2]).is_err());
        assert!(
            decode_result(&Type::Unsigned(8), &[1, 2])
                .unwrap_err()
                .contains("left over")
        );
        let none: Option<i8> = None;
        let bytes = postcard::to_allocvec(&none).unwrap();
        let ty = Type::Option(Box::new(Type::Signed(8)));
        assert_eq!(decode_result(&ty, &bytes).unwrap(), Value::Null);
    }
}

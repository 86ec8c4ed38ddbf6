//! Content-derived identifiers: modules by the blake3 hash of their bytes, tasks by the hash of
//! what they compute.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a textual identifier could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdParseError {
    /// The text is not 64 hexadecimal digits.
    #[error("expected 64 hexadecimal digits, got {len} characters: {text:?}")]
    BadLength {
        /// How many characters were given.
        len: usize,
        /// The text, shortened to at most 80 characters.
        text: String,
    },
    /// The text contains a character that is not a hexadecimal digit.
    #[error("not a hexadecimal identifier: {0:?}")]
    NotHex(String),
}

fn parse_hash(text: &str) -> Result<[u8; 32], IdParseError> {
    if text.len() != 64 {
        return Err(IdParseError::BadLength {
            len: text.chars().count(),
            text: text.chars().take(80).collect(),
        });
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).map_err(|_| IdParseError::NotHex(text.to_owned()))?;
    Ok(out)
}

macro_rules! hash_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The identifier's 32 bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The first 12 hexadecimal digits, for logs and tables.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..6])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                parse_hash(text).map(Self)
            }
        }
    };
}

hash_id! {
    /// A module's identity: the blake3 hash of its component bytes. Anyone receiving module bytes
    /// re-hashes them and rejects a mismatch.
    ModuleId
}

hash_id! {
    /// A task's identity, derived from what it computes: its module, function and arguments (the
    /// keys of argument tasks; short literals' bytes, longer literals' hashes). The same call submitted twice,
    /// by the same or another client, has the same key.
    TaskKey
}

impl ModuleId {
    /// The identity of the given module bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }
}

impl TaskKey {
    /// Starts deriving the key of a call of `function` in `module`.
    ///
    /// A key is `blake3::keyed_hash(prefix, args)`: `prefix` is derived once from the module
    /// and the function name (`blake3::derive_key`), and `args` is a compact, unambiguous
    /// encoding of the arguments in order (see [`TaskKeyBuilder`]). A call with one or two
    /// small arguments costs one blake3 compression.
    pub fn builder(module: &ModuleId, function: &str) -> TaskKeyBuilder {
        let mut material = Vec::with_capacity(40 + function.len());
        material.extend_from_slice(&module.0);
        material.extend_from_slice(&(function.len() as u64).to_le_bytes());
        material.extend_from_slice(function.as_bytes());
        TaskKeyBuilder {
            prefix: blake3::derive_key(KEY_CONTEXT, &material),
            len: 0,
            buf: [0; INLINE_ARGS],
            spill: None,
        }
    }
}

/// The context string of task-key prefixes (`blake3::derive_key`); a new version of the key
/// definition gets a new string.
const KEY_CONTEXT: &str = "taskhost task key v2";

/// Literals of at most this many bytes enter a key as they are; longer ones by their blake3
/// hash.
pub const INLINE_LITERAL: usize = 32;

/// Bytes of argument encoding a builder holds before it streams into a hasher.
const INLINE_ARGS: usize = 128;

/// Argument tags of the key encoding.
const TAG_HASHED_LITERAL: u8 = 0;
const TAG_TASK: u8 = 1;
const TAG_INLINE_LITERAL: u8 = 2;

/// Derives a [`TaskKey`] from a call's arguments, in order.
///
/// Each argument is encoded as a tag byte and its content: a task argument as `1` and the
/// task's 32-byte key; a literal of at most [`INLINE_LITERAL`] bytes as `2`, its length (one
/// byte) and its bytes; a longer literal as `0` and its 32-byte blake3 hash. The encoding is
/// unambiguous, and a literal's form depends only on its length, so equal calls get equal keys
/// and different calls different ones. The key is the blake3 keyed hash of the encoding under
/// the function's prefix (see [`TaskKey::builder`]).
///
/// Cloning a builder is cheap (a few hundred bytes, no allocation) while its arguments fit in
/// its inline buffer, so a cached builder per function can be cloned for every call.
#[derive(Clone)]
pub struct TaskKeyBuilder {
    prefix: [u8; 32],
    len: usize,
    buf: [u8; INLINE_ARGS],
    /// Once the encoding outgrows `buf`: a keyed hasher that has taken everything so far.
    spill: Option<Box<blake3::Hasher>>,
}

impl TaskKeyBuilder {
    fn push(&mut self, tag: u8, len: Option<u8>, bytes: &[u8]) {
        let head = 1 + usize::from(len.is_some());
        if let Some(h) = &mut self.spill {
            h.update(&[tag]);
            if let Some(l) = len {
                h.update(&[l]);
            }
            h.update(bytes);
            return;
        }
        let n = head + bytes.len();
        if self.len + n > INLINE_ARGS {
            let mut h = Box::new(blake3::Hasher::new_keyed(&self.prefix));
            h.update(&self.buf[..self.len]);
            self.spill = Some(h);
            return self.push(tag, len, bytes);
        }
        let at = self.len;
        self.buf[at] = tag;
        if let Some(l) = len {
            self.buf[at + 1] = l;
        }
        self.buf[at + head..at + n].copy_from_slice(bytes);
        self.len += n;
    }

    /// Adds an argument that is the output of the task `key`.
    pub fn task_arg(&mut self, key: &TaskKey) -> &mut Self {
        self.push(TAG_TASK, None, &key.0);
        self
    }

    /// Adds a literal argument (its encoded bytes, as the task receives them).
    pub fn literal_arg(&mut self, bytes: &[u8]) -> &mut Self {
        if bytes.len() <= INLINE_LITERAL {
            self.push(TAG_INLINE_LITERAL, Some(bytes.len() as u8), bytes);
        } else {
            self.push(TAG_HASHED_LITERAL, None, blake3::hash(bytes).as_bytes());
        }
        self
    }

    /// Adds a literal argument whose blake3 hash is already known (`hash` must be
    /// `blake3::hash(bytes)`); the same as [`literal_arg`](Self::literal_arg) without hashing
    /// the bytes again. Short literals enter the key by their bytes, so both are needed.
    pub fn literal_arg_hashed(&mut self, bytes: &[u8], hash: &[u8; 32]) -> &mut Self {
        if bytes.len() <= INLINE_LITERAL {
            self.push(TAG_INLINE_LITERAL, Some(bytes.len() as u8), bytes);
        } else {
            debug_assert_eq!(blake3::hash(bytes).as_bytes(), hash);
            self.push(TAG_HASHED_LITERAL, None, hash);
        }
        self
    }

    /// The key of the call described so far.
    pub fn finish(&self) -> TaskKey {
        match &self.spill {
            Some(h) => TaskKey(*h.finalize().as_bytes()),
            None => TaskKey(*blake3::keyed_hash(&self.prefix, &self.buf[..self.len]).as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_id_round_trips_through_text() {
        let id = ModuleId::of(b"module bytes");
        let text = id.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<ModuleId>().unwrap(), id);
    }

    #[test]
    fn bad_ids_are_rejected_with_a_reason() {
        assert!(matches!(
            "abc".parse::<ModuleId>(),
            Err(IdParseError::BadLength { len: 3, .. })
        ));
        let not_hex = "z".repeat(64);
        assert!(matches!(
            not_hex.parse::<ModuleId>(),
            Err(IdParseError::NotHex(_))
        ));
    }

    #[test]
    fn task_keys_depend_on_every_part_of_the_call() {
        let m = ModuleId::of(b"m");
        let base = TaskKey::builder(&m, "add").literal_arg(b"1").finish();
        assert_eq!(base, TaskKey::builder(&m, "add").literal_arg(b"1").finish());
        assert_ne!(base, TaskKey::builder(&m, "inc").literal_arg(b"1").finish());
        assert_ne!(
            base,
            TaskKey::builder(&ModuleId::of(b"n"), "add")
                .literal_arg(b"1")
                .finish()
        );
        assert_ne!(base, TaskKey::builder(&m, "add").literal_arg(b"2").finish());
        let dep = TaskKey::builder(&m, "x").finish();
        assert_ne!(
            TaskKey::builder(&m, "add").task_arg(&dep).finish(),
            TaskKey::builder(&m, "add").literal_arg(&dep.0).finish()
        );
    }

    #[test]
    fn literal_forms_and_long_argument_lists_are_consistent() {
        let m = ModuleId::of(b"m");
        let short = [7u8; INLINE_LITERAL];
        let long = [7u8; INLINE_LITERAL + 1];
        for bytes in [&short[..], &long[..], &[][..]] {
            assert_eq!(
                TaskKey::builder(&m, "f").literal_arg(bytes).finish(),
                TaskKey::builder(&m, "f")
                    .literal_arg_hashed(bytes, blake3::hash(bytes).as_bytes())
                    .finish()
            );
        }
        // A short literal and a long one differ, as do a literal and its hash.
        let h = *blake3::hash(&long).as_bytes();
        assert_ne!(
            TaskKey::builder(&m, "f").literal_arg(&long).finish(),
            TaskKey::builder(&m, "f").literal_arg(&h).finish()
        );
        // Many arguments (past the inline buffer) equal the one-shot keyed hash of the encoding.
        let dep = TaskKey::builder(&m, "x").finish();
        let mut b = TaskKey::builder(&m, "f");
        let mut encoding = Vec::new();
        for i in 0..10u8 {
            b.task_arg(&dep).literal_arg(&[i]);
            encoding.push(TAG_TASK);
            encoding.extend_from_slice(&dep.0);
            encoding.extend_from_slice(&[TAG_INLINE_LITERAL, 1, i]);
        }
        let prefix = TaskKey::builder(&m, "f").prefix;
        assert_eq!(
            b.finish().0,
            *blake3::keyed_hash(&prefix, &encoding).as_bytes()
        );
        // Cloning mid-way and continuing gives the same key as building in one go.
        let mut c = TaskKey::builder(&m, "f");
        c.task_arg(&dep);
        let mut d = c.clone();
        d.literal_arg(&short);
        assert_eq!(
            d.finish(),
            TaskKey::builder(&m, "f")
                .task_arg(&dep)
                .literal_arg(&short)
                .finish()
        );
    }
}

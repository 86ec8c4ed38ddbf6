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
    /// keys of argument tasks, the hashes of literal arguments). The same call submitted twice,
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
    pub fn builder(module: &ModuleId, function: &str) -> TaskKeyBuilder {
        let mut hasher = blake3::Hasher::new_derive_key("taskhost task key v1");
        hasher.update(&module.0);
        hasher.update(&(function.len() as u64).to_le_bytes());
        hasher.update(function.as_bytes());
        TaskKeyBuilder { hasher }
    }
}

/// Derives a [`TaskKey`] from a call's arguments, in order.
#[derive(Clone)]
pub struct TaskKeyBuilder {
    hasher: blake3::Hasher,
}

impl TaskKeyBuilder {
    /// Adds an argument that is the output of the task `key`.
    pub fn task_arg(&mut self, key: &TaskKey) -> &mut Self {
        self.hasher.update(&[1]);
        self.hasher.update(&key.0);
        self
    }

    /// Adds a literal argument.
    pub fn literal_arg(&mut self, bytes: &[u8]) -> &mut Self {
        self.hasher.update(&[0]);
        self.hasher.update(blake3::hash(bytes).as_bytes());
        self
    }

    /// Adds a literal argument already hashed with blake3.
    pub fn literal_hash_arg(&mut self, hash: &[u8; 32]) -> &mut Self {
        self.hasher.update(&[0]);
        self.hasher.update(hash);
        self
    }

    /// The key of the call described so far.
    pub fn finish(&self) -> TaskKey {
        TaskKey(*self.hasher.finalize().as_bytes())
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
}

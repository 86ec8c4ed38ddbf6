//! Write taskhost task functions in Rust.
//!
//! A task module is a WebAssembly component that exports the `taskhost:task/tasks` interface of
//! the contract in `wit/`. With this crate, a task author writes ordinary functions inside one
//! [`export_tasks!`] invocation and builds the crate for `wasm32-wasip2`:
//!
//! ```ignore
//! taskhost_guest::export_tasks! {
//!     /// Adds two numbers.
//!     fn add(a: f64, b: f64) -> f64 {
//!         a + b
//!     }
//!
//!     /// Fails when asked to divide by zero: a `Result` return becomes a task error.
//!     fn div(a: i64, b: i64) -> Result<i64, String> {
//!         a.checked_div(b).ok_or_else(|| "division by zero".to_string())
//!     }
//!
//!     /// Raw functions take and return bytes as they are, for bulk data.
//!     raw fn reverse(data: &[u8]) -> Vec<u8> {
//!         data.iter().rev().copied().collect()
//!     }
//! }
//! ```
//!
//! Typed arguments and results are encoded with [postcard](https://docs.rs/postcard), one byte
//! string per argument (see `docs/encoding.md`). A wrong number of arguments or bytes that do not
//! decode as the declared type are answered with the `invalid-input` task error, never a trap.
//! A function returning `Result<T, E>` with `E: Display` reports `Err` as the `failed` task
//! error. A panic is a trap: the host reports it with the panic message.
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the `.wasm` file in
//! `target/wasm32-wasip2/release/` is the component to hand to taskhost.
//!
//! ## Lean guests (no WASI)
//!
//! A `wasm32-wasip2` guest built with std imports 13 WASI interfaces even when it uses none,
//! and wiring them costs about half of a trivial task's instantiation. The crate also builds for
//! `wasm32-unknown-unknown`, whose std imports nothing: the core module it produces imports only
//! `taskhost:task/host`, and becomes a component with `wit-component`'s `ComponentEncoder`
//! (the WIT world is embedded in the module by the bindings). Such a guest has no stdout,
//! stderr, clocks or randomness (std's versions do nothing, fail or panic there); it logs
//! through [`log`]. On targets without WASI the crate installs a panic hook on the first call
//! into the module that sends the panic message to the host's log at error level (std would
//! print it to a stderr that does not exist), so a lean guest's panic still reports its message.
//! A lean guest should also make [`ArenaAllocator`] its global allocator: std's allocator there
//! grows the linear memory on the first allocation of every instance, which costs a task more
//! than the WASI imports it saves (see the allocator's documentation).

use std::fmt::Display;

// Lets the generated bindings name this crate by its public path from inside it too.
extern crate self as taskhost_guest;

#[doc(hidden)]
#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "task-module",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_task_module",
        default_bindings_module: "::taskhost_guest::bindings",
        runtime_path: "::taskhost_guest::__private::wit_bindgen::rt",
    });
}

pub use arena::{ArenaAllocator, DEFAULT_ARENA_BYTES};
pub use bindings::exports::taskhost::task::tasks::{FunctionInfo, TaskError};

mod arena;

/// Structured logging through the host: records reach the worker's logs, tagged with the task.
pub mod log {
    pub use crate::bindings::taskhost::task::host::Level;
    use crate::bindings::taskhost::task::host::{Field, log as host_log};

    /// Emits a record at `level` with key/value fields.
    pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
        let fields: Vec<Field> = fields
            .iter()
            .map(|(key, value)| Field {
                key: (*key).to_owned(),
                value: (*value).to_owned(),
            })
            .collect();
        host_log(level, message, &fields);
    }

    /// Emits a debug record.
    pub fn debug(message: &str) {
        log(Level::Debug, message, &[]);
    }

    /// Emits an info record.
    pub fn info(message: &str) {
        log(Level::Info, message, &[]);
    }

    /// Emits a warning record.
    pub fn warn(message: &str) {
        log(Level::Warn, message, &[]);
    }

    /// Emits an error record.
    pub fn error(message: &str) {
        log(Level::Error, message, &[]);
    }
}

/// Support code for the expansion of [`export_tasks!`]; not a stable API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    pub use wit_bindgen;

    /// Checks that a call received exactly `expected` arguments.
    pub fn check_arity(function: &str, expected: usize, args: &[Vec<u8>]) -> Result<(), TaskError> {
        if args.len() == expected {
            Ok(())
        } else {
            Err(TaskError::InvalidInput(format!(
                "{function} takes {expected} argument{}, got {}",
                if expected == 1 { "" } else { "s" },
                args.len()
            )))
        }
    }

    /// Decodes one postcard-encoded argument, rejecting trailing bytes.
    pub fn decode<T: serde::de::DeserializeOwned>(
        function: &str,
        index: usize,
        name: &str,
        ty: &str,
        bytes: &[u8],
    ) -> Result<T, TaskError> {
        match postcard::take_from_bytes::<T>(bytes) {
            Ok((value, [])) => Ok(value),
            Ok((_, rest)) => Err(TaskError::InvalidInput(format!(
                "{function}: argument {index} (`{name}: {ty}`) has {} trailing bytes after its value",
                rest.len()
            ))),
            Err(err) => Err(TaskError::InvalidInput(format!(
                "{function}: argument {index} (`{name}: {ty}`) could not be decoded from {} bytes: {err}",
                bytes.len()
            ))),
        }
    }

    /// Encodes a typed result with postcard.
    pub fn encode<T: serde::Serialize>(function: &str, value: &T) -> Result<Vec<u8>, TaskError> {
        postcard::to_allocvec(value).map_err(|err| {
            TaskError::Failed(format!("{function}: result could not be encoded: {err}"))
        })
    }

    /// Encodes the result of a typed function returning `Result<T, E>`.
    pub fn encode_fallible<T: serde::Serialize, E: Display>(
        function: &str,
        value: Result<T, E>,
    ) -> Result<Vec<u8>, TaskError> {
        match value {
            Ok(value) => encode(function, &value),
            Err(err) => Err(TaskError::Failed(err.to_string())),
        }
    }

    /// What a raw task function may take: a borrowed `&[u8]`, or an owned `Vec<u8>` (the
    /// argument's own buffer, moved in without a copy: return it to answer with it).
    pub trait RawInput<'a> {
        /// Takes the argument.
        fn from_arg(arg: &'a mut Vec<u8>) -> Self;
    }

    impl<'a> RawInput<'a> for &'a [u8] {
        fn from_arg(arg: &'a mut Vec<u8>) -> Self {
            arg.as_slice()
        }
    }

    impl<'a> RawInput<'a> for Vec<u8> {
        fn from_arg(arg: &'a mut Vec<u8>) -> Self {
            std::mem::take(arg)
        }
    }

    /// What a raw task function may return.
    pub trait RawOutput {
        /// The bytes to return, or the task error.
        fn into_output(self) -> Result<Vec<u8>, TaskError>;
    }

    impl RawOutput for Vec<u8> {
        fn into_output(self) -> Result<Vec<u8>, TaskError> {
            Ok(self)
        }
    }

    impl<E: Display> RawOutput for Result<Vec<u8>, E> {
        fn into_output(self) -> Result<Vec<u8>, TaskError> {
            self.map_err(|err| TaskError::Failed(err.to_string()))
        }
    }

    /// Makes a panic report its message where the host can see it; called at the start of
    /// every call into the module, it does its work once per instance.
    ///
    /// With WASI, std's default hook writes the message to stderr, which the host quotes in the
    /// trap it reports: nothing to do. Without WASI (`wasm32-unknown-unknown`) stderr does not
    /// exist, so the hook sends the message through the host's `log` at error level instead.
    #[inline]
    pub fn install_panic_hook() {
        #[cfg(not(target_os = "wasi"))]
        {
            static INSTALLED: std::sync::Once = std::sync::Once::new();
            INSTALLED.call_once(|| std::panic::set_hook(Box::new(log_panic)));
        }
    }

    /// The panic hook of guests without WASI: the message and location, to the host's log.
    #[cfg(not(target_os = "wasi"))]
    fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
        crate::log::error(&info.to_string());
    }

    /// Joins doc-comment lines into one short description.
    pub fn doc(lines: &[&str]) -> String {
        lines
            .iter()
            .map(|line| line.trim())
            .collect::<Vec<_>>()
            .join(" ")
            .trim()
            .to_owned()
    }

    /// Formats a signature such as `add(a: f64, b: f64) -> f64`.
    pub fn signature(name: &str, params: &[(&str, &str)], ret: &str) -> String {
        let params: Vec<String> = params.iter().map(|(n, t)| format!("{n}: {t}")).collect();
        format!("{name}({}) -> {ret}", params.join(", "))
    }

    /// Describes one function.
    pub fn info(
        name: &str,
        doc_lines: &[&str],
        params: &[(&str, &str)],
        ret: &str,
    ) -> FunctionInfo {
        FunctionInfo {
            name: name.to_owned(),
            doc: doc(doc_lines),
            signature: signature(name, params, ret),
        }
    }
}

/// Exports the task functions written inside it as the module's `tasks` interface.
///
/// Use it once per crate. Each item is an ordinary function with doc comments:
/// - `fn name(a: A, b: B) -> R { ... }`: typed; each argument is decoded with postcard
///   (`A: DeserializeOwned`) and the result encoded with postcard (`R: Serialize`); with no
///   `->`, the result is `()`.
/// - `fn name(...) -> Result<T, E> { ... }`: typed and fallible; `Err(e)` becomes the `failed`
///   task error with `e.to_string()` (`E: Display`).
/// - `raw fn name(a: &[u8], ...) -> Vec<u8> { ... }`: bytes in, bytes out, no encoding; it may
///   also return `Result<Vec<u8>, E>`. An argument may be taken as `Vec<u8>` instead: the
///   argument's own buffer, moved in without a copy (to be modified in place or returned).
///
/// The functions stay callable from Rust as ordinary functions of the crate.
#[macro_export]
macro_rules! export_tasks {
    ($($items:tt)*) => {
        $crate::__export_tasks_munch! { [] $($items)* }
    };
}

/// Parses the items of [`export_tasks!`] one at a time.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_tasks_munch {
    // A raw function.
    ([$($done:tt)*]
     $(#[doc = $doc:literal])*
     raw fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) -> $ret:ty $body:block
     $($rest:tt)*) => {
        $(#[doc = $doc])*
        #[allow(dead_code)]
        fn $name($($arg: $ty),*) -> $ret $body
        $crate::__export_tasks_munch! {
            [$($done)* { raw, $name, [$($doc),*], [$($arg : $ty),*], $ret }]
            $($rest)*
        }
    };
    // A typed function returning a `Result`.
    ([$($done:tt)*]
     $(#[doc = $doc:literal])*
     fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) -> Result<$ok:ty, $err:ty> $body:block
     $($rest:tt)*) => {
        $(#[doc = $doc])*
        #[allow(dead_code)]
        fn $name($($arg: $ty),*) -> Result<$ok, $err> $body
        $crate::__export_tasks_munch! {
            [$($done)* { fallible, $name, [$($doc),*], [$($arg : $ty),*], Result<$ok, $err> }]
            $($rest)*
        }
    };
    // A typed function.
    ([$($done:tt)*]
     $(#[doc = $doc:literal])*
     fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) -> $ret:ty $body:block
     $($rest:tt)*) => {
        $(#[doc = $doc])*
        #[allow(dead_code)]
        fn $name($($arg: $ty),*) -> $ret $body
        $crate::__export_tasks_munch! {
            [$($done)* { typed, $name, [$($doc),*], [$($arg : $ty),*], $ret }]
            $($rest)*
        }
    };
    // A typed function returning `()`.
    ([$($done:tt)*]
     $(#[doc = $doc:literal])*
     fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) $body:block
     $($rest:tt)*) => {
        $(#[doc = $doc])*
        #[allow(dead_code)]
        fn $name($($arg: $ty),*) $body
        $crate::__export_tasks_munch! {
            [$($done)* { typed, $name, [$($doc),*], [$($arg : $ty),*], () }]
            $($rest)*
        }
    };
    // Every item parsed: emit the exported interface.
    ([$({ $kind:ident, $name:ident, [$($doc:literal),*], [$($arg:ident : $ty:ty),*], $ret:ty })*]) => {
        #[doc(hidden)]
        pub struct __TaskhostTasks;

        impl $crate::bindings::exports::taskhost::task::tasks::Guest for __TaskhostTasks {
            fn functions() -> ::std::vec::Vec<$crate::FunctionInfo> {
                $crate::__private::install_panic_hook();
                ::std::vec![$(
                    $crate::__private::info(
                        stringify!($name),
                        &[$($doc),*],
                        &[$((stringify!($arg), $crate::__export_tasks_arg_type!($kind, $ty))),*],
                        stringify!($ret),
                    )
                ),*]
            }

            fn call(
                name: ::std::string::String,
                args: ::std::vec::Vec<::std::vec::Vec<u8>>,
            ) -> ::std::result::Result<::std::vec::Vec<u8>, $crate::TaskError> {
                $crate::__private::install_panic_hook();
                $(
                    if name == stringify!($name) {
                        return $crate::__export_tasks_call!($kind, $name, args, [$($arg : $ty),*]);
                    }
                )*
                Err($crate::TaskError::UnknownFunction(name))
            }
        }

        $crate::bindings::__export_task_module!(__TaskhostTasks with_types_in $crate::bindings);
    };
}

/// The type a parameter is described with: raw parameters are bytes to the caller (`&[u8]`),
/// whether the function borrows them or takes the buffer (`Vec<u8>`).
#[doc(hidden)]
#[macro_export]
macro_rules! __export_tasks_arg_type {
    (raw, $ty:ty) => {
        "&[u8]"
    };
    ($kind:ident, $ty:ty) => {
        stringify!($ty)
    };
}

/// Decodes the arguments of one call, calls the function and encodes its result.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_tasks_call {
    (raw, $name:ident, $args:ident, [$($arg:ident : $ty:ty),*]) => {{
        let expected = <[&str]>::len(&[$(stringify!($arg)),*]);
        $crate::__private::check_arity(stringify!($name), expected, &$args)?;
        #[allow(unused_mut)]
        let mut $args = $args;
        #[allow(unused_mut, unused_variables)]
        let mut __inputs = $args.iter_mut();
        $(
            // The arity was checked: every argument is there.
            let $arg: $ty = match __inputs.next() {
                Some(bytes) => $crate::__private::RawInput::from_arg(bytes),
                None => return Err($crate::TaskError::InvalidInput(::std::string::String::from("missing argument"))),
            };
        )*
        $crate::__private::RawOutput::into_output($name($($arg),*))
    }};
    ($kind:ident, $name:ident, $args:ident, [$($arg:ident : $ty:ty),*]) => {{
        let expected = <[&str]>::len(&[$(stringify!($arg)),*]);
        $crate::__private::check_arity(stringify!($name), expected, &$args)?;
        #[allow(unused_mut)]
        let mut __index = 0usize;
        #[allow(unused_mut, unused_variables)]
        let mut __inputs = $args.iter();
        $(
            let $arg: $ty = $crate::__private::decode(
                stringify!($name),
                __index,
                stringify!($arg),
                stringify!($ty),
                __inputs.next().map(|bytes| bytes.as_slice()).unwrap_or(&[]),
            )?;
            __index += 1;
        )*
        let _ = __index;
        $crate::__export_tasks_call!(@encode $kind, $name, $name($($arg),*))
    }};
    (@encode typed, $name:ident, $value:expr) => {
        $crate::__private::encode(stringify!($name), &$value)
    };
    (@encode fallible, $name:ident, $value:expr) => {
        $crate::__private::encode_fallible(stringify!($name), $value)
    };
}

#[cfg(test)]
mod tests {
    use super::__private::*;
    use super::TaskError;

    #[test]
    fn arity_errors_name_the_function_and_counts() {
        let err = check_arity("add", 2, &[vec![]]).unwrap_err();
        assert!(
            matches!(err, TaskError::InvalidInput(ref m) if m == "add takes 2 arguments, got 1"),
            "{err:?}"
        );
    }

    #[test]
    fn undecodable_and_trailing_bytes_are_invalid_input() {
        let err = decode::<f64>("add", 0, "a", "f64", &[1, 2]).unwrap_err();
        assert!(
            matches!(err, TaskError::InvalidInput(ref m) if m.contains("argument 0 (`a: f64`) could not be decoded")),
            "{err:?}"
        );
        let bytes = postcard::to_allocvec(&1.5f64).unwrap();
        let mut longer = bytes.clone();
        longer.push(0);
        let err = decode::<f64>("add", 1, "b", "f64", &longer).unwrap_err();
        assert!(
            matches!(err, TaskError::InvalidInput(ref m) if m.contains("1 trailing bytes")),
            "{err:?}"
        );
        assert_eq!(decode::<f64>("add", 1, "b", "f64", &bytes).unwrap(), 1.5);
    }

    #[test]
    fn fallible_results_become_failed_errors() {
        let err = encode_fallible::<u8, _>("f", Err("boom")).unwrap_err();
        assert!(matches!(err, TaskError::Failed(ref m) if m == "boom"));
        assert_eq!(encode_fallible::<u8, &str>("f", Ok(7)).unwrap(), vec![7]);
    }

    #[test]
    fn signatures_read_like_rust() {
        assert_eq!(
            signature("add", &[("a", "f64"), ("b", "f64")], "f64"),
            "add(a: f64, b: f64) -> f64"
        );
        assert_eq!(doc(&[" Adds two", " numbers."]), "Adds two numbers.");
    }
}

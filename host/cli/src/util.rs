//! Helpers shared by subcommands: opening the runtime, resolving modules, parsing sizes and
//! durations.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use taskhost_proto::ModuleId;
use taskhost_runtime::{Runtime, RuntimeConfig};

use crate::cmd::GlobalArgs;

/// Opens a runtime on the data directory, sized for running a few tasks in this process.
pub fn open_runtime(global: &GlobalArgs) -> anyhow::Result<Runtime> {
    let dir = global.data_dir()?;
    let mut config = RuntimeConfig::new(&dir);
    config.max_instances = 4;
    Runtime::new(config).with_context(|| format!("opening the runtime in {}", dir.display()))
}

/// Resolves `module`: the id of a stored module, or the path of a component file (stored
/// first, so that it gets an id and a cached compilation).
pub fn resolve_module(runtime: &Runtime, module: &str) -> anyhow::Result<ModuleId> {
    if let Ok(id) = module.parse::<ModuleId>()
        && (runtime.modules().contains(&id) || !Path::new(module).exists())
    {
        if !runtime.modules().contains(&id) {
            bail!(
                "unknown module {id}: it is not in the module store (add it with `taskhost module add FILE`)"
            );
        }
        return Ok(id);
    }
    let bytes = std::fs::read(module).with_context(|| {
        format!("{module:?} is neither a module id nor a readable component file")
    })?;
    runtime
        .put(&bytes)
        .with_context(|| format!("storing {module}"))
}

/// Parses a duration such as `200ms`, `10s`, `1.5s`, `2m` or `30` (seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (examples: 200ms, 10s, 2m)"))?;
    if !value.is_finite() || value <= 0.0 {
        return Err(format!("invalid duration {text:?}: it must be positive"));
    }
    Duration::try_from_secs_f64(value * scale)
        .map_err(|e| format!("invalid duration {text:?}: {e}"))
}

/// Parses a size in bytes such as `64MiB`, `1G`, `512k` or `1048576`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let scale: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "invalid size {text:?} (examples: 64MiB, 1GiB, 4096)"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?} (examples: 64MiB, 1GiB, 4096)"))?;
    Ok((value * scale as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0s").is_err());
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").is_err());
    }
}

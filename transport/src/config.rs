//! One loader for both programs' configuration: each program has one
//! config type that is both its TOML file (serde) and its command line
//! (clap). The file gives the values; options given on the command line
//! override them, one by one.

use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgMatches, FromArgMatches};
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid configuration: {detail}")]
    Invalid { path: String, detail: String },
    #[error("command line: {0}")]
    Args(String),
}

/// A path option that may be left empty on the command line (the file
/// then gives it; clap's own path parser refuses an empty default).
pub fn path(s: &str) -> Result<std::path::PathBuf, std::convert::Infallible> {
    Ok(s.into())
}

/// The configuration from `file` (if any) with what the command line in
/// `matches` set explicitly on top. The config type's clap argument ids
/// must be its field names (the derive's default).
pub fn load<T>(matches: &ArgMatches, file: Option<&Path>) -> Result<T, ConfigError>
where
    T: FromArgMatches + Serialize + DeserializeOwned,
{
    let cli = T::from_arg_matches(matches).map_err(|e| ConfigError::Args(e.to_string()))?;
    let Some(path) = file else {
        return Ok(cli);
    };
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let invalid = |detail: String| ConfigError::Invalid {
        path: shown.clone(),
        detail,
    };
    let mut merged: toml::Table = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let given = toml::Table::try_from(&cli).map_err(|e| ConfigError::Args(e.to_string()))?;
    // Settings that are file-only (`#[arg(skip)]`) have no argument id.
    let ids: Vec<String> = matches.ids().map(|i| i.as_str().to_string()).collect();
    for (key, value) in given {
        let on_command_line = ids.contains(&key)
            && matches!(matches.value_source(&key), Some(ValueSource::CommandLine));
        if on_command_line {
            merged.insert(key, value);
        }
    }
    T::deserialize(toml::Value::Table(merged)).map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, Command};

    #[derive(Debug, Args, serde::Serialize, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value_t = 10)]
        #[serde(default = "ten")]
        every: u64,
    }

    fn ten() -> u64 {
        10
    }

    fn matches(args: &[&str]) -> ArgMatches {
        Sample::augment_args(Command::new("t")).get_matches_from(args)
    }

    #[test]
    fn the_file_gives_values_and_the_command_line_overrides_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "name = \"村\"\nevery = 3\n").unwrap();
        let s: Sample = load(&matches(&["t"]), Some(&path)).unwrap();
        assert_eq!((s.name.as_str(), s.every), ("村", 3));
        let s: Sample = load(&matches(&["t", "--every", "7"]), Some(&path)).unwrap();
        assert_eq!((s.name.as_str(), s.every), ("村", 7));
        // Without a file, the command line alone.
        let s: Sample = load(&matches(&["t", "--name", "x"]), None).unwrap();
        assert_eq!((s.name.as_str(), s.every), ("x", 10));
        // A misspelt key is named.
        std::fs::write(&path, "nmae = \"x\"\n").unwrap();
        let e = load::<Sample>(&matches(&["t"]), Some(&path)).unwrap_err();
        assert!(e.to_string().contains("nmae"), "{e}");
    }
}

//! `--config FILE`: a TOML file that sets any flag of a command; flags given
//! on the command line override it.
//!
//! The file has one table per command, keyed by the flag names without
//! their dashes; keys outside any table apply to every command that has
//! such a flag (so `secret-file` serves `lb`, `worker` and the admin
//! commands, and is left out for `put`):
//!
//! ```toml
//! [lb]
//! listen = "0.0.0.0:5059"
//! worker-timeout-ms = 1000
//! ack = "all"
//! http = "127.0.0.1:8080"
//!
//! [worker]
//! lb = "10.0.0.1:5060"
//! fsync = "always"
//! insecure = false
//! ```
//!
//! [`expand`] turns the file into ordinary flags placed before the ones
//! typed, and the parser lets a later flag override an earlier one. So
//! every flag, its checks and its `--help` stay in one place (`main.rs`).

use std::ffi::OsString;

/// Replaces `--config FILE` (or `--config=FILE`) in `args` (the program
/// name, then the command, then its flags) by the flags the file sets.
/// `has_flag(command, name)` says whether a command takes `--name`.
pub fn expand(
    args: Vec<OsString>,
    has_flag: &dyn Fn(&str, &str) -> bool,
) -> Result<Vec<OsString>, String> {
    let mut path = None;
    let mut rest = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--config") => {
                path = Some(it.next().ok_or("--config needs a file")?);
            }
            Some(s) if s.starts_with("--config=") => {
                path = Some(OsString::from(&s["--config=".len()..]));
            }
            _ => rest.push(a),
        }
    }
    let Some(path) = path else {
        return Ok(rest);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read --config {}: {e}", path.to_string_lossy()))?;
    let command = rest
        .get(1)
        .and_then(|c| c.to_str())
        .unwrap_or("")
        .to_string();
    let flags = flags_from(&text, &command, &|name| has_flag(&command, name))
        .map_err(|e| format!("--config {}: {e}", path.to_string_lossy()))?;
    let split = rest.len().min(2);
    let mut out: Vec<OsString> = rest[..split].to_vec();
    out.extend(flags.into_iter().map(OsString::from));
    out.extend(rest[split..].iter().cloned());
    Ok(out)
}

/// The flags a config text sets for `command`: the top-level keys it has a
/// flag for, then every key of the table named after the command (an
/// unknown one there is the parser's error to report).
pub fn flags_from(
    text: &str,
    command: &str,
    has_flag: &dyn Fn(&str) -> bool,
) -> Result<Vec<String>, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let mut flags = Vec::new();
    for (key, value) in &table {
        if !value.is_table() && has_flag(key) {
            push_flag(&mut flags, key, value)?;
        }
    }
    if let Some(section) = table.get(command) {
        let Some(section) = section.as_table() else {
            return Err(format!("[{command}] must be a table"));
        };
        for (key, value) in section {
            push_flag(&mut flags, key, value)?;
        }
    }
    Ok(flags)
}

fn push_flag(flags: &mut Vec<String>, key: &str, value: &toml::Value) -> Result<(), String> {
    let flag = format!("--{key}");
    match value {
        toml::Value::Boolean(true) => flags.push(flag),
        toml::Value::Boolean(false) => {}
        toml::Value::String(s) => flags.extend([flag, s.clone()]),
        toml::Value::Integer(i) => flags.extend([flag, i.to_string()]),
        toml::Value::Float(f) => flags.extend([flag, f.to_string()]),
        toml::Value::Array(items) => {
            for item in items {
                push_flag(flags, key, item)?;
            }
        }
        other => return Err(format!("{key}: unsupported value (a {})", other.type_str())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn a_command_table_becomes_flags_before_the_typed_ones() {
        let text = "insecure = true\n[lb]\nlisten = \"127.0.0.1:7\"\nworker-timeout-ms = 900\nack = \"all\"\n[worker]\nfsync = \"always\"\n";
        assert_eq!(
            flags_from(text, "lb", &|_| true).expect("parses"),
            // Keys come in name order (the order of flags does not matter).
            [
                "--insecure",
                "--ack",
                "all",
                "--listen",
                "127.0.0.1:7",
                "--worker-timeout-ms",
                "900"
            ]
        );
        let dir = std::env::temp_dir().join(format!("rrstore-config-{}", std::process::id()));
        std::fs::write(&dir, text).expect("write");
        let path = dir.to_string_lossy().into_owned();
        let args = expand(
            os(&["rrstore", "worker", "--config", &path, "--fsync", "never"]),
            &|_, _| true,
        )
        .expect("expands");
        assert_eq!(
            args,
            os(&[
                "rrstore",
                "worker",
                "--insecure",
                "--fsync",
                "always",
                "--fsync",
                "never"
            ])
        );
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn bad_files_are_clear_errors() {
        assert!(flags_from("[lb\n", "lb", &|_| true).is_err());
        assert_eq!(
            flags_from("lb = 3\n", "worker", &|_| true).expect("a flag"),
            ["--lb", "3"]
        );
        assert!(
            flags_from("lb = 3\n", "lb", &|_| true).is_err(),
            "[lb] must be a table"
        );
        // A top-level key the command has no flag for is left out.
        assert_eq!(
            flags_from("secret-file = \"s\"\n", "put", &|k| k != "secret-file").expect("ok"),
            Vec::<String>::new()
        );
        assert!(flags_from("[lb]\nx = { a = 1 }\n", "lb", &|_| true).is_err());
        assert!(expand(os(&["rrstore", "lb", "--config"]), &|_, _| true).is_err());
        assert!(expand(
            os(&["rrstore", "lb", "--config", "/nonexistent/x.toml"]),
            &|_, _| true
        )
        .is_err());
    }
}

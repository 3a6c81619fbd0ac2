//! Reading and writing RON documents with errors that point at `file:line:column`.
//!
//! All of qvit's configuration (model specs, recipes, accelerators, sweeps, projects) is RON. The
//! documents use the `unwrap_variant_newtypes` extension so a tagged value reads naturally:
//! `EfficientViT(name: "b1", ...)` rather than `EfficientViT((name: "b1", ...))`.

use std::fs;
use std::io::Write;
use std::path::Path;

use ron::extensions::Extensions;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

fn options() -> ron::Options {
    ron::Options::default().with_default_extension(Extensions::UNWRAP_VARIANT_NEWTYPES)
}

/// Parses `text` as RON; `origin` (a path or a description) prefixes any error.
pub fn parse<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T> {
    options().from_str(text).map_err(|e| Error::Ron {
        origin: origin.to_string(),
        line: e.span.start.line,
        column: e.span.start.col,
        message: describe(&e.code),
    })
}

/// The text of `name` in a table of shipped presets; an unknown name lists the valid ones.
pub fn preset_text<'t>(
    kind: &'static str,
    table: &'t [(&str, &str)],
    name: &str,
) -> Result<&'t str> {
    table
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
        .ok_or_else(|| Error::UnknownName {
            kind,
            name: name.to_string(),
            valid: table.iter().map(|(n, _)| n.to_string()).collect(),
        })
}

/// Reads and parses a RON file.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Serialises `value` as pretty RON.
pub fn to_string<T: Serialize>(value: &T) -> Result<String> {
    let pretty = ron::ser::PrettyConfig::new()
        .struct_names(true)
        .extensions(Extensions::UNWRAP_VARIANT_NEWTYPES);
    options()
        .to_string_pretty(value, pretty)
        .map_err(|e| Error::Ron {
            origin: "serialiser".to_string(),
            line: 0,
            column: 0,
            message: e.to_string(),
        })
}

/// Writes `value` as RON to `path` atomically: a crash leaves either the old file or the new one.
pub fn write<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_atomic(path, to_string(value)?.as_bytes())
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, then renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io_err = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    // Unique per write, not only per process: threads of one process (the explorer's jobs,
    // parallel tests) may write the same file at once, and must not share a temporary.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{file_name}.{}-{n}.tmp", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err)?;
    remove_stale_temporaries(dir, &file_name);
    Ok(())
}

/// Removes `.<name>.<pid>-<n>.tmp` files that writers of `name` killed mid-write left behind: those
/// whose process is gone (known where `/proc` lists processes; elsewhere none are touched).
fn remove_stale_temporaries(dir: &Path, file_name: &str) {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let prefix = format!(".{file_name}.");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .map(|rest| rest.split_once('-').map_or(rest, |(pid, _)| pid))
            .filter(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if let Some(pid) = pid
            && !proc.join(pid).exists()
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Rewords ron's error codes where the default text does not say what to do.
fn describe(code: &ron::Error) -> String {
    match code {
        ron::Error::NoSuchStructField {
            expected,
            found,
            outer,
        } => format!(
            "unknown field `{found}`{}; valid fields: {}",
            outer
                .as_ref()
                .map(|o| format!(" in `{o}`"))
                .unwrap_or_default(),
            expected.join(", ")
        ),
        ron::Error::NoSuchEnumVariant {
            expected,
            found,
            outer,
        } => format!(
            "unknown variant `{found}`{}; valid variants: {}",
            outer
                .as_ref()
                .map(|o| format!(" of `{o}`"))
                .unwrap_or_default(),
            expected.join(", ")
        ),
        ron::Error::MissingStructField { field, outer } => format!(
            "missing field `{field}`{}",
            outer
                .as_ref()
                .map(|o| format!(" in `{o}`"))
                .unwrap_or_default()
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod atomic_tests {
    use super::*;

    #[test]
    fn a_killed_writers_temporary_is_removed_by_the_next_write() {
        let dir = std::env::temp_dir().join(format!("qvit-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        // No process has pid 0; pid 1 (init) is always running, so its file is left alone, as
        // is another file's temporary.
        let stale = dir.join(".out.ron.0.tmp");
        let live = dir.join(".out.ron.1.tmp");
        let other = dir.join(".other.ron.0.tmp");
        for f in [&stale, &live, &other] {
            fs::write(f, "partial").unwrap();
        }
        write_atomic(&dir.join("out.ron"), b"x").unwrap();
        assert!(!stale.exists() && live.exists() && other.exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, serde::Serialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Point {
        x: i32,
        y: i32,
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let err = parse::<Point>("(\n  x: 1,\n  y: ]\n)", "p.ron").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("p.ron:3:"), "{text}");
    }

    #[test]
    fn unknown_field_lists_the_valid_ones() {
        let err = parse::<Point>("(x: 1, z: 2)", "p.ron").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("unknown field `z`"), "{text}");
        assert!(text.contains("x, y"), "{text}");
    }

    #[test]
    fn threads_writing_one_file_at_once_all_succeed_and_leave_a_whole_file() {
        let dir = std::env::temp_dir().join(format!("qvit-ron-threads-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("shared.ron");
        std::thread::scope(|scope| {
            for t in 0..8 {
                let path = &path;
                scope.spawn(move || {
                    for i in 0..50 {
                        write(path, &Point { x: t, y: i }).unwrap();
                    }
                });
            }
        });
        let last = read::<Point>(&path).unwrap();
        assert!((0..8).contains(&last.x) && last.y == 49, "{last:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn atomic_write_round_trips_and_leaves_no_temp_file() {
        let dir = std::env::temp_dir().join(format!("qvit-ron-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.ron");
        write(&path, &Point { x: 3, y: -4 }).unwrap();
        write(&path, &Point { x: 5, y: 6 }).unwrap();
        assert_eq!(read::<Point>(&path).unwrap(), Point { x: 5, y: 6 });
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}

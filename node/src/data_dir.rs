//! The data dir's format version: `<data-dir>/FORMAT` holds the version of the layout the
//! node wrote (`quire-data-dir <N>`). A node opens a data dir of its own version; it refuses a
//! newer one (written by a newer Quire: start that one, or restore a backup made for this
//! one), and migrates an older one once, step by step, logging each step, before anything
//! else reads the dir. Data dirs made before the version was recorded carry no file and are
//! version 1.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The format this build of Quire writes and reads.
pub const CURRENT_FORMAT: u32 = 1;
/// The file that records the format, inside the data dir.
pub const FORMAT_FILE: &str = "FORMAT";
/// The first word of the file.
const MAGIC: &str = "quire-data-dir";
/// Largest format file read.
const MAX_FORMAT_FILE_BYTES: u64 = 4096;

/// Why a data dir's format cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error(
        "the data directory {dir} has format version {found}, newer than version {supported} that this quire ({binary}) reads; run the newer quire that wrote it, or restore a backup into a new data dir"
    )]
    Newer {
        dir: PathBuf,
        found: u32,
        supported: u32,
        binary: &'static str,
    },
    #[error("{path} is not a data dir format file ({reason}); it should read `{MAGIC} <N>`")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What [`ensure_format`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatOutcome {
    /// A new data dir: the current version was recorded.
    Created,
    /// The dir was already at the current version.
    Current,
    /// The dir was migrated from this version to the current one.
    Migrated { from: u32 },
}

/// Whether `dir` holds anything a node wrote (an empty or missing dir is new).
fn holds_data(dir: &Path) -> Result<bool, FormatError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(FormatError::Io {
            what: "list",
            path: dir.to_owned(),
            source,
        }),
    }
}

/// The version recorded in `dir`, `None` when no file records one.
pub fn read_format(dir: &Path) -> Result<Option<u32>, FormatError> {
    let path = dir.join(FORMAT_FILE);
    let corrupt = |reason: String| FormatError::Corrupt {
        path: path.clone(),
        reason,
    };
    let meta = match std::fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(FormatError::Io {
                what: "read",
                path,
                source,
            });
        }
    };
    if meta.len() > MAX_FORMAT_FILE_BYTES {
        return Err(corrupt(format!("{} bytes", meta.len())));
    }
    let text = std::fs::read_to_string(&path).map_err(|source| FormatError::Io {
        what: "read",
        path: path.clone(),
        source,
    })?;
    let mut words = text.split_whitespace();
    if words.next() != Some(MAGIC) {
        return Err(corrupt(format!("it does not start with `{MAGIC}`")));
    }
    let version = words
        .next()
        .ok_or_else(|| corrupt("no version".into()))?
        .parse::<u32>()
        .map_err(|e| corrupt(format!("bad version: {e}")))?;
    if version == 0 {
        return Err(corrupt("version 0".into()));
    }
    Ok(Some(version))
}

/// Records `version` in `dir`, durably: a temporary file, fsynced, renamed over the old one,
/// and the directory fsynced.
fn write_format(dir: &Path, version: u32) -> Result<(), FormatError> {
    let path = dir.join(FORMAT_FILE);
    let tmp = dir.join(format!("{FORMAT_FILE}.tmp"));
    let io = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| FormatError::Io { what, path, source }
    };
    let mut file = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    file.write_all(format!("{MAGIC} {version}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io("write", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io("replace", &path))?;
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync", dir))?;
    Ok(())
}

/// One migration step: from `version` to `version + 1`. There is none yet: version 1 is the
/// first format, and a dir without a file only needs the file written. When the format
/// changes, this matches on `version` and runs that step's conversion.
fn migrate_step(_dir: &Path, _version: u32) -> Result<(), FormatError> {
    Ok(())
}

/// Checks the data dir's format before the node opens it (call it after creating the dir,
/// before anything reads it): records the current version in a new dir, refuses a newer
/// one, and migrates an older one (or one without a file: version 1) once, logging it.
pub fn ensure_format(dir: &Path) -> Result<FormatOutcome, FormatError> {
    let recorded = read_format(dir)?;
    let found = match recorded {
        Some(version) => version,
        None if !holds_data(dir)? => {
            write_format(dir, CURRENT_FORMAT)?;
            tracing::info!(dir = %dir.display(), "new data directory: format version {CURRENT_FORMAT}");
            return Ok(FormatOutcome::Created);
        }
        // Written before versions were recorded.
        None => 1,
    };
    if found > CURRENT_FORMAT {
        return Err(FormatError::Newer {
            dir: dir.to_owned(),
            found,
            supported: CURRENT_FORMAT,
            binary: env!("CARGO_PKG_VERSION"),
        });
    }
    if found == CURRENT_FORMAT && recorded.is_some() {
        return Ok(FormatOutcome::Current);
    }
    for version in found..CURRENT_FORMAT {
        tracing::info!(dir = %dir.display(), "migrating the data directory from format version {version} to {}", version + 1);
        migrate_step(dir, version)?;
        write_format(dir, version + 1)?;
    }
    if recorded.is_none() {
        write_format(dir, CURRENT_FORMAT)?;
    }
    tracing::info!(
        dir = %dir.display(),
        "migrated the data directory from format version {found}{} to {CURRENT_FORMAT}",
        if recorded.is_none() { " (no FORMAT file)" } else { "" }
    );
    Ok(FormatOutcome::Migrated { from: found })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_dir_records_the_current_version_and_opens_again() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ensure_format(dir.path()).unwrap(), FormatOutcome::Created);
        assert_eq!(read_format(dir.path()).unwrap(), Some(CURRENT_FORMAT));
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FORMAT_FILE)).unwrap(),
            format!("quire-data-dir {CURRENT_FORMAT}\n")
        );
        assert_eq!(ensure_format(dir.path()).unwrap(), FormatOutcome::Current);
        assert!(!dir.path().join("FORMAT.tmp").exists());
    }

    #[test]
    fn a_dir_without_a_version_is_version_one_and_is_migrated_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("raft")).unwrap();
        assert_eq!(
            ensure_format(dir.path()).unwrap(),
            FormatOutcome::Migrated { from: 1 }
        );
        assert_eq!(read_format(dir.path()).unwrap(), Some(CURRENT_FORMAT));
        assert_eq!(ensure_format(dir.path()).unwrap(), FormatOutcome::Current);
    }

    #[test]
    fn a_newer_version_is_refused_naming_both_versions_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(FORMAT_FILE);
        std::fs::write(&file, "quire-data-dir 7\n").unwrap();
        let err = ensure_format(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, FormatError::Newer { found: 7, .. }), "{text}");
        assert!(text.contains("format version 7"), "{text}");
        assert!(
            text.contains(&format!("version {CURRENT_FORMAT} that this quire")),
            "{text}"
        );
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "quire-data-dir 7\n"
        );
    }

    #[test]
    fn a_damaged_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(FORMAT_FILE);
        for bad in [
            "",
            "quire-data-dir",
            "quire-data-dir x",
            "quire-data-dir 0",
            "sled 1",
        ] {
            std::fs::write(&file, bad).unwrap();
            let err = ensure_format(dir.path()).unwrap_err().to_string();
            assert!(err.contains("FORMAT"), "{bad:?}: {err}");
        }
    }
}

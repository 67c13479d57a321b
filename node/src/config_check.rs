//! `quire config check FILE`: every problem of a config file at once, each with its line and
//! column. It finds TOML syntax errors, unknown keys (all of them), values of the wrong type,
//! the problems `Config::validate` reports (placed on the line of the key they name), and,
//! unless told not to, files the config names that cannot be read.
//!
//! The known keys come from the config types themselves (the field lists serde derives), so
//! there is no second list to keep in step with `config.rs`. The check reads the file alone
//! unless asked (`--env`) to apply the `QUIRE_*` environment variables over it as `quire
//! serve` does; `serve`'s command-line flags are never applied.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::config::{
    Config, LimitsSection, LogSection, McpSection, MetricsSection, NodeSection, NotionSection,
    PeerSection, RaftSection, SandboxSection, SecuritySection, StaticMember,
};

/// Files a config may name in `peer.tls_dir` (what `quire certs node` writes).
pub const TLS_FILES: [&str; 3] = ["node.pem", "node.key", "ca.pem"];

/// Largest config file read (a config is a few kilobytes).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// What kind of problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProblemKind {
    /// Not valid TOML.
    Syntax,
    /// A section or key the config does not have.
    UnknownKey,
    /// A value of the wrong type or form (a string where a number goes, a bad address).
    WrongType,
    /// A value `Config::validate` refuses.
    Invalid,
    /// A file or directory the config names that cannot be used.
    File,
    /// A `QUIRE_*` environment variable that cannot be applied (with `--env`).
    Environment,
}

/// One problem, with its place in the file when known (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub col: Option<usize>,
    pub kind: ProblemKind,
    pub message: String,
}

/// Options of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOptions {
    /// Check that files the config names (master key, TLS directory) exist and are readable.
    /// Off (`--no-files`) when checking a config for another machine.
    pub check_files: bool,
    /// `QUIRE_*` variables to apply over the file before the value checks, as `quire serve`
    /// does (`--env`: the process environment). `None` checks the file alone.
    pub env: Option<BTreeMap<String, String>>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            check_files: true,
            env: None,
        }
    }
}

impl CheckOptions {
    /// The `QUIRE_*` variables of this process's environment.
    pub fn process_env() -> BTreeMap<String, String> {
        std::env::vars()
            .filter(|(name, _)| name.starts_with("QUIRE_"))
            .collect()
    }
}

/// Why a check could not run at all (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("cannot read {path}: not UTF-8 text")]
    NotText { path: PathBuf },
}

/// The result of checking one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub file: PathBuf,
    /// Sorted by line; problems without a line come first.
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// The process exit code: 0 clean, 1 with problems.
    pub fn exit_code(&self) -> u8 {
        if self.is_clean() { 0 } else { 1 }
    }
}

impl fmt::Display for Report {
    /// One line per problem, `FILE:LINE:COL: message` (`FILE: message` when the place is not
    /// known), then a summary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        for p in &self.problems {
            match (p.line, p.col) {
                (Some(line), Some(col)) => writeln!(f, "{file}:{line}:{col}: {}", p.message)?,
                (Some(line), None) => writeln!(f, "{file}:{line}: {}", p.message)?,
                _ => writeln!(f, "{file}: {}", p.message)?,
            }
        }
        match self.problems.len() {
            0 => writeln!(f, "{file}: ok"),
            1 => writeln!(f, "{file}: 1 problem"),
            n => writeln!(f, "{file}: {n} problems"),
        }
    }
}

/// Reads and checks a config file. `Err` only when the file cannot be read.
pub fn check_file(path: &Path, options: &CheckOptions) -> Result<Report, CheckError> {
    let read_err = |source| CheckError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(CheckError::TooLarge {
            path: path.to_owned(),
        });
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(CheckError::TooLarge {
            path: path.to_owned(),
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| CheckError::NotText {
        path: path.to_owned(),
    })?;
    Ok(Report {
        file: path.to_owned(),
        problems: check_str(&text, options),
    })
}

/// Runs `quire config check`: prints the report (problems on stdout) and returns the exit
/// code: 0 clean, 1 with problems, 2 when the file cannot be read.
pub fn run(path: &Path, options: &CheckOptions) -> u8 {
    match check_file(path, options) {
        Ok(report) => {
            print!("{report}");
            report.exit_code()
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

/// Checks the text of a config file; every problem found, sorted by place.
pub fn check_str(text: &str, options: &CheckOptions) -> Vec<Problem> {
    let lines = LineIndex::new(text);
    let mut problems = Vec::new();
    let (root, syntax_errors) = DeTable::parse_recoverable(text);
    for e in &syntax_errors {
        problems.push(lines.problem(
            e.span().map(|s| s.start),
            ProblemKind::Syntax,
            format!("TOML syntax: {}", one_line(e.message())),
        ));
    }
    let root_span = root.span();
    let mut table = root.into_inner();

    // Unknown keys: removed from the table so the type check below sees only known ones.
    let mut removed: Vec<String> = Vec::new();
    unknown_keys(&mut table, &lines, &mut problems, &mut removed);

    // Wrong types: deserialize; on an error, report it at its key, drop that key, retry.
    let config = typed_config(
        table.clone(),
        root_span,
        &lines,
        &mut problems,
        &mut removed,
    );

    // With `--env`, the environment overrides the file as it does for `quire serve`.
    let config = match (config, &options.env) {
        (Some(mut config), Some(env)) => match config.apply_env(|name| env.get(name).cloned()) {
            Ok(()) => Some(config),
            Err(e) => {
                problems.push(lines.problem(None, ProblemKind::Environment, e.to_string()));
                None
            }
        },
        (config, _) => config,
    };
    // After a syntax error the table holds what could be parsed; its values are checked too.
    if let Some(config) = &config {
        if let Err(crate::config::ConfigError::Invalid(messages)) = config.validate() {
            for message in messages {
                // A problem that names a key already reported (and dropped) is a consequence.
                if removed.iter().any(|k| mentions(&message, k)) {
                    continue;
                }
                let at = locate(&message, &table);
                problems.push(lines.problem(at, ProblemKind::Invalid, message));
            }
        }
        if options.check_files {
            file_problems(config, &table, &lines, &mut problems);
        }
    }
    problems.sort_by_key(|p| (p.line, p.col, p.kind));
    problems
}

/// The field names serde derives for a struct, read by asking it to deserialize itself from
/// a deserializer that only records the names.
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

/// The keys of each section of the config file, from the config types. A section added to
/// `Config` needs a line here (a test checks every section has one).
fn section_keys(section: &str) -> Option<&'static [&'static str]> {
    Some(match section {
        "node" => fields_of::<NodeSection>(),
        "mcp" => fields_of::<McpSection>(),
        "notion" => fields_of::<NotionSection>(),
        "limits" => fields_of::<LimitsSection>(),
        "security" => fields_of::<SecuritySection>(),
        "raft" => fields_of::<RaftSection>(),
        "peer" => fields_of::<PeerSection>(),
        "sandbox" => fields_of::<SandboxSection>(),
        "metrics" => fields_of::<MetricsSection>(),
        "log" => fields_of::<LogSection>(),
        "placement" => fields_of::<crate::config::PlacementSection>(),
        _ => return None,
    })
}

/// Keys that hold an array of tables, and the keys of each table.
fn array_table_keys(section: &str, key: &str) -> Option<&'static [&'static str]> {
    match (section, key) {
        ("peer", "members") => Some(fields_of::<StaticMember>()),
        _ => None,
    }
}

/// The sections of the config file.
pub fn sections() -> &'static [&'static str] {
    fields_of::<Config>()
}

/// Every key of the config file, `section.key`, in declaration order.
pub fn known_keys() -> Vec<String> {
    let mut keys = Vec::new();
    for section in sections() {
        for key in section_keys(section).unwrap_or(&[]) {
            keys.push(format!("{section}.{key}"));
        }
    }
    keys
}

fn unknown_keys(
    table: &mut DeTable<'_>,
    lines: &LineIndex,
    problems: &mut Vec<Problem>,
    removed: &mut Vec<String>,
) {
    let mut drop_sections = Vec::new();
    for (name, value) in table.iter_mut() {
        let section = name.get_ref().as_ref();
        let Some(keys) = section_keys(section) else {
            problems.push(lines.problem(
                Some(name.span().start),
                ProblemKind::UnknownKey,
                format!(
                    "unknown section `{section}`{} (sections: {})",
                    suggest(section, sections()),
                    sections().join(", ")
                ),
            ));
            drop_sections.push(section.to_owned());
            continue;
        };
        let DeValue::Table(inner) = value.get_mut() else {
            // Reported as a wrong type by the typed pass.
            continue;
        };
        let mut drop_keys = Vec::new();
        for (key, value) in inner.iter_mut() {
            let key_name = key.get_ref().as_ref();
            if !keys.contains(&key_name) {
                problems.push(lines.problem(
                    Some(key.span().start),
                    ProblemKind::UnknownKey,
                    format!(
                        "unknown key `{section}.{key_name}`{} (keys of [{section}]: {})",
                        suggest(key_name, keys),
                        keys.join(", ")
                    ),
                ));
                drop_keys.push(key_name.to_owned());
                continue;
            }
            let Some(item_keys) = array_table_keys(section, key_name) else {
                continue;
            };
            let DeValue::Array(items) = value.get_mut() else {
                continue;
            };
            for item in items.iter_mut() {
                let DeValue::Table(item) = item.get_mut() else {
                    continue;
                };
                let mut drop_item_keys = Vec::new();
                for (k, _) in item.iter() {
                    let k = k.get_ref().as_ref();
                    if !item_keys.contains(&k) {
                        problems.push(lines.problem(
                            Some(lines_key_start(item, k)),
                            ProblemKind::UnknownKey,
                            format!(
                                "unknown key `{k}` in [[{section}.{key_name}]]{} (keys: {})",
                                suggest(k, item_keys),
                                item_keys.join(", ")
                            ),
                        ));
                        drop_item_keys.push(k.to_owned());
                    }
                }
                for k in drop_item_keys {
                    item.remove(k.as_str());
                }
            }
        }
        for key in drop_keys {
            inner.remove(key.as_str());
            removed.push(format!("{section}.{key}"));
        }
    }
    for section in drop_sections {
        table.remove(section.as_str());
        removed.push(section);
    }
}

fn lines_key_start(table: &DeTable<'_>, key: &str) -> usize {
    table
        .get_key_value(key)
        .map(|(k, _)| k.span().start)
        .unwrap_or(0)
}

/// Deserializes the config, dropping each key whose value is refused and trying again, so
/// every wrong value is reported. `None` when the config cannot be built even then.
fn typed_config(
    mut table: DeTable<'_>,
    span: Range<usize>,
    lines: &LineIndex,
    problems: &mut Vec<Problem>,
    removed: &mut Vec<String>,
) -> Option<Config> {
    // Each round drops one key (or gives up), so the keys bound the rounds.
    let rounds = count_keys(&table) + 1;
    for _ in 0..rounds {
        let de = toml::de::Deserializer::from(Spanned::new(span.clone(), table.clone()));
        let err = match Config::deserialize(de) {
            Ok(config) => return Some(config),
            Err(err) => err,
        };
        let message = one_line(err.message());
        let at = err.span().map(|s| s.start);
        let path = at.and_then(|at| path_at(&table, at));
        match path {
            Some(path) => {
                let start = path_start(&table, &path).or(at);
                // In an array of tables (`[[peer.members]]`) the whole item goes: an item
                // without one of its fields cannot be built. Checks of values that depend on
                // the array would only repeat this problem: they wait until it is fixed.
                let item = path.iter().position(|seg| matches!(seg, Seg::Index(_)));
                let name = match item {
                    Some(i) => {
                        let inner = path_name(&path[i + 1..]);
                        let inner = if inner.is_empty() {
                            String::new()
                        } else {
                            format!(" `{inner}`")
                        };
                        format!("`{}` item{inner}", path_name(&path[..i]))
                    }
                    None => format!("`{}`", path_name(&path)),
                };
                problems.push(lines.problem(
                    start,
                    ProblemKind::WrongType,
                    format!("{name}: {message}"),
                ));
                let drop = item.map_or(path.len(), |i| i + 1);
                remove_at(&mut table, &path[..drop]);
                removed.push(path_name(&path[..item.unwrap_or(path.len())]));
            }
            None => {
                problems.push(lines.problem(at, ProblemKind::WrongType, message));
                return None;
            }
        }
    }
    None
}

fn count_keys(table: &DeTable<'_>) -> usize {
    table
        .values()
        .map(|v| match v.get_ref() {
            DeValue::Table(t) => 1 + count_keys(t),
            _ => 1,
        })
        .sum()
}

/// One step of a path into the document: a key of a table or an item of an array.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// `peer.members[1].id` (items counted from 0), for a path without items `node.id`.
fn path_name(path: &[Seg]) -> String {
    let mut name = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if name.is_empty() => name.push_str(k),
            Seg::Key(k) => {
                name.push('.');
                name.push_str(k);
            }
            Seg::Index(i) => name.push_str(&format!("[{i}]")),
        }
    }
    name
}

fn holds(r: Range<usize>, at: usize) -> bool {
    r.start <= at && at < r.end.max(r.start + 1)
}

/// The deepest key or array item whose key or value holds byte `at`.
fn path_at(table: &DeTable<'_>, at: usize) -> Option<Vec<Seg>> {
    for (key, value) in table.iter() {
        let here = Seg::Key(key.get_ref().to_string());
        if let Some(mut sub) = path_in_value(value, at) {
            sub.insert(0, here);
            return Some(sub);
        }
        if holds(key.span(), at) || holds(value.span(), at) {
            return Some(vec![here]);
        }
    }
    None
}

fn path_in_value(value: &Spanned<DeValue<'_>>, at: usize) -> Option<Vec<Seg>> {
    match value.get_ref() {
        DeValue::Table(t) => path_at(t, at),
        DeValue::Array(items) => {
            items
                .iter()
                .enumerate()
                .find_map(|(i, item)| match path_in_value(item, at) {
                    Some(mut sub) => {
                        sub.insert(0, Seg::Index(i));
                        Some(sub)
                    }
                    None => holds(item.span(), at).then(|| vec![Seg::Index(i)]),
                })
        }
        _ => None,
    }
}

/// Where the thing at `path` starts: its key, or for an array item the item itself.
fn path_start(table: &DeTable<'_>, path: &[Seg]) -> Option<usize> {
    let (Seg::Key(first), rest) = path.split_first()? else {
        return None;
    };
    let (key, value) = table.get_key_value(first.as_str())?;
    if rest.is_empty() {
        return Some(key.span().start);
    }
    let mut value = value;
    for (n, seg) in rest.iter().enumerate() {
        let last = n + 1 == rest.len();
        match (seg, value.get_ref()) {
            (Seg::Key(k), DeValue::Table(t)) => {
                let (key, v) = t.get_key_value(k.as_str())?;
                if last {
                    return Some(key.span().start);
                }
                value = v;
            }
            (Seg::Index(i), DeValue::Array(items)) => {
                let item = items.get(*i)?;
                if last {
                    return Some(item.span().start);
                }
                value = item;
            }
            _ => return None,
        }
    }
    None
}

fn remove_at(table: &mut DeTable<'_>, path: &[Seg]) {
    let Some((Seg::Key(first), rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        table.remove(first.as_str());
        return;
    }
    if let Some(value) = table.get_mut(first.as_str()) {
        remove_in_value(value.get_mut(), rest);
    }
}

fn remove_in_value(value: &mut DeValue<'_>, path: &[Seg]) {
    match (path, value) {
        (_, DeValue::Table(t)) => remove_at(t, path),
        ([Seg::Index(i)], DeValue::Array(items)) => {
            let mut kept = toml::de::DeArray::new();
            for (n, item) in items.iter().enumerate() {
                if n != *i {
                    kept.push(item.clone());
                }
            }
            *items = kept;
        }
        ([Seg::Index(i), rest @ ..], DeValue::Array(items)) => {
            if let Some(item) = items.get_mut(*i) {
                remove_in_value(item.get_mut(), rest);
            }
        }
        _ => {}
    }
}

fn key_span(table: &DeTable<'_>, path: &[String]) -> Option<Range<usize>> {
    let (section, rest) = path.split_first()?;
    let (name, value) = table.get_key_value(section.as_str())?;
    match rest.first() {
        None => Some(name.span()),
        Some(key) => match value.get_ref() {
            DeValue::Table(inner) => inner.get_key_value(key.as_str()).map(|(k, _)| k.span()),
            _ => None,
        },
    }
}

/// Whether `message` names the dotted key `key` (as a whole word).
fn mentions(message: &str, key: &str) -> bool {
    words(message).any(|w| w == key || w.starts_with(&format!("{key}.")))
}

/// Words of a message: runs of `[a-z0-9_.]`, trailing dots trimmed.
fn words(message: &str) -> impl Iterator<Item = &str> {
    message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .map(|w| w.trim_end_matches('.'))
        .filter(|w| !w.is_empty())
}

/// Where a `validate` message belongs: the first `section.key` it names that the file sets,
/// else a quoted value of the file it quotes, else the header of a section it names.
fn locate(message: &str, table: &DeTable<'_>) -> Option<usize> {
    for word in words(message) {
        if let Some((section, key)) = word.split_once('.')
            && let Some(span) = key_span(table, &[section.to_owned(), key.to_owned()])
        {
            return Some(span.start);
        }
    }
    if let Some(at) = quoted_value(message, table) {
        return Some(at);
    }
    for word in words(message) {
        let section = word.split('.').next().unwrap_or(word);
        if let Some(span) = key_span(table, &[section.to_owned()]) {
            return Some(span.start);
        }
    }
    None
}

fn quoted_value(message: &str, table: &DeTable<'_>) -> Option<usize> {
    fn walk(value: &Spanned<DeValue<'_>>, message: &str) -> Option<usize> {
        match value.get_ref() {
            DeValue::String(s) if !s.is_empty() && message.contains(&format!("{s:?}")) => {
                Some(value.span().start)
            }
            DeValue::Table(t) => t.values().find_map(|v| walk(v, message)),
            DeValue::Array(a) => a.iter().find_map(|v| walk(v, message)),
            _ => None,
        }
    }
    table.values().find_map(|v| walk(v, message))
}

fn file_problems(
    config: &Config,
    table: &DeTable<'_>,
    lines: &LineIndex,
    problems: &mut Vec<Problem>,
) {
    let at = |section: &str, key: &str| {
        key_span(table, &[section.to_owned(), key.to_owned()]).map(|s| s.start)
    };
    if let Some(path) = &config.security.master_key_file
        && let Err(e) = crate::keys::read_key_file(path)
    {
        problems.push(lines.problem(
            at("security", "master_key_file"),
            ProblemKind::File,
            format!("security.master_key_file: {e:#}"),
        ));
    }
    for path in &config.security.previous_master_key_files {
        if let Err(e) = crate::keys::read_key_file(path) {
            problems.push(lines.problem(
                at("security", "previous_master_key_files"),
                ProblemKind::File,
                format!("security.previous_master_key_files: {e:#}"),
            ));
        }
    }
    if let Some(path) = &config.security.oidc_ca_file
        && let Err(e) = crate::oidc::read_ca_file(path)
    {
        problems.push(lines.problem(
            at("security", "oidc_ca_file"),
            ProblemKind::File,
            format!("security.oidc_ca_file: {e}"),
        ));
    }
    if let Some(dir) = &config.peer.tls_dir {
        for name in TLS_FILES {
            let file = dir.join(name);
            if let Err(e) = std::fs::File::open(&file).and_then(|f| f.metadata()) {
                problems.push(lines.problem(
                    at("peer", "tls_dir"),
                    ProblemKind::File,
                    format!("peer.tls_dir: cannot read {}: {e}", file.display()),
                ));
            }
        }
    }
    if let Some(paths) = crate::https::TlsPaths::of(config) {
        // The front's certificate and key must load and match, as `serve` will need them.
        let min_version =
            if crate::config::TLS_MIN_VERSIONS.contains(&config.node.tls_min_version.as_str()) {
                config.node.tls_min_version.as_str()
            } else {
                "1.3"
            };
        if let Err(e) = crate::https::FrontTls::load(paths, min_version) {
            let key = match &e {
                crate::https::FrontTlsError::File {
                    setting: "node.tls_key_file",
                    ..
                }
                | crate::https::FrontTlsError::Mismatch { .. } => "tls_key_file",
                _ => "tls_cert_file",
            };
            problems.push(lines.problem(at("node", key), ProblemKind::File, e.to_string()));
        }
    }
    let data_dir = &config.node.data_dir;
    if data_dir.exists() && !data_dir.is_dir() {
        problems.push(lines.problem(
            at("node", "data_dir"),
            ProblemKind::File,
            format!(
                "node.data_dir: {} exists and is not a directory",
                data_dir.display()
            ),
        ));
    }
}

/// A "did you mean" for a misspelt name (edit distance at most 2).
fn suggest(name: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!(", did you mean `{k}`?"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// toml's messages may run over several lines; a report line holds one.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Byte offset → 1-based line and column (in characters).
struct LineIndex<'a> {
    text: &'a str,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        Self { text }
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = self.text[line_start..offset].chars().count() + 1;
        (line, col)
    }

    fn problem(&self, at: Option<usize>, kind: ProblemKind, message: String) -> Problem {
        let (line, col) = match at {
            Some(at) => {
                let (l, c) = self.position(at);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        Problem {
            line,
            col,
            kind,
            message,
        }
    }
}

/// A deserializer that records the field names a struct asks for, and nothing else.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field names recorded")
    }
}

impl std::error::Error for Stop {}

impl serde::de::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
    type Error = Stop;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        *self.0 = fields;
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Vec<Problem> {
        check_str(
            text,
            &CheckOptions {
                check_files: false,
                env: None,
            },
        )
    }

    fn at(p: &Problem) -> (usize, usize) {
        (p.line.unwrap_or(0), p.col.unwrap_or(0))
    }

    #[test]
    fn every_section_has_its_keys() {
        assert_eq!(sections().len(), 11, "{:?}", sections());
        for section in sections() {
            let keys = section_keys(section).unwrap_or_else(|| panic!("no keys for {section}"));
            assert!(!keys.is_empty(), "{section}");
        }
        // Option fields, absent from a serialized default, are known too.
        let keys = known_keys();
        for key in [
            "node.public_url",
            "node.zone",
            "peer.tls_dir",
            "security.master_key_file",
        ] {
            assert!(keys.contains(&key.to_owned()), "{key} in {keys:?}");
        }
        assert_eq!(fields_of::<StaticMember>(), ["id", "addr"]);
    }

    #[test]
    fn a_clean_file_has_no_problems() {
        assert_eq!(check(""), vec![]);
        assert_eq!(check("[node]\nid = 2\n[peer]\ninsecure = true\n"), vec![]);
    }

    #[test]
    fn syntax_errors_carry_their_line_and_column() {
        let problems = check("[node]\nid = 2\nlisten = \"127.0.0.1:1\n");
        assert!(!problems.is_empty());
        assert_eq!(problems[0].kind, ProblemKind::Syntax);
        assert_eq!(problems[0].line, Some(3), "{problems:?}");
        assert!(problems[0].col.is_some());
    }

    #[test]
    fn all_unknown_keys_are_reported_with_a_suggestion() {
        let text = "[node]\nlisen = \"127.0.0.1:1\"\nid = 2\n\n[notion]\nbase_ulr = \"x\"\n[nodes]\nx = 1\n";
        let problems = check(text);
        let unknown: Vec<_> = problems
            .iter()
            .filter(|p| p.kind == ProblemKind::UnknownKey)
            .collect();
        assert_eq!(unknown.len(), 3, "{problems:?}");
        assert_eq!(at(unknown[0]), (2, 1));
        assert!(unknown[0].message.contains("`node.lisen`"), "{unknown:?}");
        assert!(unknown[0].message.contains("did you mean `listen`"));
        assert_eq!(at(unknown[1]), (6, 1));
        assert!(unknown[1].message.contains("did you mean `base_url`"));
        assert_eq!(at(unknown[2]).0, 7);
        assert!(unknown[2].message.contains("unknown section `nodes`"));
        assert!(unknown[2].message.contains("did you mean `node`"));
        // Nothing else: the unknown keys did not hide or cause other problems.
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn unknown_keys_in_member_tables_are_found() {
        let text = "[node]\nid = 1\n[peer]\ninsecure = true\nlisten = \"127.0.0.1:7900\"\n\n[[peer.members]]\nid = 1\naddr = \"127.0.0.1:7900\"\nadr = \"x\"\n";
        let problems = check(text);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(at(&problems[0]), (10, 1));
        assert!(problems[0].message.contains("did you mean `addr`"));
    }

    #[test]
    fn every_wrong_type_is_reported_at_its_key() {
        let text = "[node]\nid = \"one\"\nlisten = \"nowhere\"\n[raft]\nheartbeat_ms = true\n";
        let problems = check(text);
        let wrong: Vec<_> = problems
            .iter()
            .filter(|p| p.kind == ProblemKind::WrongType)
            .collect();
        assert_eq!(wrong.len(), 3, "{problems:?}");
        assert_eq!(at(wrong[0]), (2, 1));
        assert!(wrong[0].message.starts_with("`node.id`"), "{wrong:?}");
        assert_eq!(at(wrong[1]), (3, 1));
        assert!(wrong[1].message.starts_with("`node.listen`"), "{wrong:?}");
        assert_eq!(at(wrong[2]), (5, 1));
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn member_tables_are_checked_item_by_item() {
        let text = "[peer]\ninsecure = true\nlisten = \"127.0.0.1:1\"\n\n[[peer.members]]\nid = \"x\"\naddr = \"a:1\"\n\n[[peer.members]]\nid = 1\n\n[[peer.members]]\nid = 3\naddr = \"c:1\"\n";
        let problems = check(text);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(at(&problems[0]), (6, 1));
        assert!(
            problems[0]
                .message
                .starts_with("`peer.members` item `id`: invalid type"),
            "{problems:?}"
        );
        assert_eq!(problems[1].line, Some(9), "{problems:?}");
        assert!(
            problems[1].message.contains("missing field `addr`"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_section_of_the_wrong_type_is_reported() {
        let problems = check("node = 3\n");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].kind, ProblemKind::WrongType);
        assert_eq!(at(&problems[0]), (1, 1));
    }

    #[test]
    fn validate_problems_land_on_the_key_they_name() {
        let text = "[node]\ncluster_name = \"Bad Name\"\n\n[notion]\nbase_url = \"ftp://x\"\n\n[raft]\nheartbeat_ms = 900\n";
        let problems = check(text);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.iter().all(|p| p.kind == ProblemKind::Invalid));
        assert_eq!(at(&problems[0]), (2, 1));
        assert!(problems[0].message.contains("node.cluster_name"));
        assert_eq!(at(&problems[1]), (5, 1));
        // "raft timings …" names no dotted key: it lands on the [raft] header.
        assert_eq!(problems[2].line, Some(7), "{problems:?}");
    }

    #[test]
    fn a_bad_peer_address_lands_on_its_value() {
        let text = "[node]\nid = 1\n[peer]\ninsecure = true\nlisten = \"127.0.0.1:7900\"\njoin = \"https://10.0.0.1:7900\"\n";
        let problems = check(text);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(at(&problems[0]), (6, 8));
    }

    #[test]
    fn a_dropped_key_does_not_cause_a_second_problem() {
        // peer.listen is refused; "peer.join needs peer.listen" would only repeat it.
        let text = "[peer]\ninsecure = true\nlisten = \"nowhere\"\njoin = \"10.0.0.1:7900\"\n";
        let problems = check(text);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].kind, ProblemKind::WrongType);
    }

    #[test]
    fn named_files_must_be_readable() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("master.key");
        let tls = dir.path().join("tls");
        std::fs::create_dir(&tls).unwrap();
        std::fs::write(tls.join("node.pem"), "x").unwrap();
        let text = format!(
            "[security]\nmaster_key_file = {:?}\n[peer]\nlisten = \"127.0.0.1:7900\"\ntls_dir = {:?}\n",
            key.display().to_string(),
            tls.display().to_string()
        );
        let with_files = check_str(&text, &CheckOptions::default());
        let files: Vec<_> = with_files
            .iter()
            .filter(|p| p.kind == ProblemKind::File)
            .collect();
        assert_eq!(files.len(), 3, "{with_files:?}");
        assert_eq!(at(files[0]).0, 2);
        assert!(files[0].message.contains("master.key"), "{files:?}");
        assert!(files[1].message.contains("node.key"), "{files:?}");
        assert!(files[2].message.contains("ca.pem"), "{files:?}");
        assert_eq!(check(&text), vec![]);

        // A key file that is not a key is refused too; a good one passes.
        std::fs::write(&key, "not a key").unwrap();
        std::fs::write(tls.join("node.key"), "x").unwrap();
        std::fs::write(tls.join("ca.pem"), "x").unwrap();
        let problems = check_str(&text, &CheckOptions::default());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].message.contains("not a key"), "{problems:?}");
        std::fs::write(&key, "ab".repeat(32)).unwrap();
        assert_eq!(check_str(&text, &CheckOptions::default()), vec![]);
    }

    #[test]
    fn every_previous_master_key_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("old.key");
        std::fs::write(&good, "cd".repeat(32)).unwrap();
        let bad = dir.path().join("older.key");
        let missing = dir.path().join("oldest.key");
        std::fs::write(&bad, "not a key").unwrap();
        let text = format!(
            "[node]\nid = 1\n[security]\nprevious_master_key_files = [{:?}, {:?}, {:?}]\n",
            good.display().to_string(),
            bad.display().to_string(),
            missing.display().to_string()
        );
        let problems = check_str(&text, &CheckOptions::default());
        assert_eq!(problems.len(), 2, "{problems:?}");
        for p in &problems {
            assert_eq!(p.kind, ProblemKind::File);
            assert_eq!(at(p).0, 4, "{p:?}");
            assert!(p.message.contains("previous_master_key_files"), "{p:?}");
        }
        assert!(problems[0].message.contains("older.key"), "{problems:?}");
        assert!(problems[1].message.contains("oldest.key"), "{problems:?}");
        assert_eq!(check(&text), vec![]);
    }

    #[test]
    fn the_oidc_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("idp-ca.pem");
        let text = format!(
            "[security]\noidc_ca_file = {:?}\n",
            ca.display().to_string()
        );
        let problems = check_str(&text, &CheckOptions::default());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(at(&problems[0]).0, 2);
        assert!(
            problems[0].message.contains("security.oidc_ca_file"),
            "{problems:?}"
        );
        std::fs::write(&ca, "not a certificate").unwrap();
        let problems = check_str(&text, &CheckOptions::default());
        assert!(
            problems[0].message.contains("no PEM certificate"),
            "{problems:?}"
        );
        let pem = quire_transport::tls::generate_ca("idp").unwrap().cert_pem;
        std::fs::write(&ca, pem).unwrap();
        assert_eq!(check_str(&text, &CheckOptions::default()), vec![]);
    }

    #[test]
    fn the_https_certificate_and_key_must_load_and_match() {
        let dir = tempfile::tempdir().unwrap();
        let ca = quire_transport::tls::generate_ca("t").unwrap();
        let cert =
            crate::certs::issue_http_cert(&ca.cert_pem, &ca.key_pem, &["10.0.0.1".into()]).unwrap();
        let other =
            crate::certs::issue_http_cert(&ca.cert_pem, &ca.key_pem, &["10.0.0.1".into()]).unwrap();
        let (pem, key) = (dir.path().join("http.pem"), dir.path().join("http.key"));
        let text = format!(
            "[node]\nlisten = \"10.0.0.1:7800\"\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
            pem.display().to_string(),
            key.display().to_string()
        );
        // Missing: reported on the certificate's line; the values themselves are fine.
        assert_eq!(check(&text), vec![]);
        let problems = check_str(&text, &CheckOptions::default());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(at(&problems[0]).0, 3);
        assert!(
            problems[0].message.contains("node.tls_cert_file"),
            "{problems:?}"
        );
        // A key of another certificate: reported on the key's line.
        std::fs::write(&pem, &cert.cert_pem).unwrap();
        std::fs::write(&key, &other.key_pem).unwrap();
        let problems = check_str(&text, &CheckOptions::default());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(at(&problems[0]).0, 4);
        assert!(
            problems[0].message.contains("does not match"),
            "{problems:?}"
        );
        std::fs::write(&key, &cert.key_pem).unwrap();
        assert_eq!(check_str(&text, &CheckOptions::default()), vec![]);
        // Without the files, a non-loopback listen needs allow_plain_http.
        let problems = check("[node]\nlisten = \"10.0.0.1:7800\"\n");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(at(&problems[0]).0, 2);
        assert!(
            problems[0].message.contains("allow_plain_http"),
            "{problems:?}"
        );
        assert_eq!(
            check("[node]\nlisten = \"10.0.0.1:7800\"\nallow_plain_http = true\n"),
            vec![]
        );
    }

    #[test]
    fn placement_labels_and_timings_are_checked_at_their_lines() {
        let ok = "[node]\nregion = \"eu-west\"\nzone = \"eu-west-1a\"\ncapacity = 200\n[placement]\ngrace_ms = 60000\n";
        assert_eq!(check(ok), vec![]);
        let problems = check("[node]\nid = 2\nregion = \"EU West\"\ncapacity = 0\n");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(at(&problems[0]).0, 3, "{problems:?}");
        assert!(problems[0].message.contains("node.region"), "{problems:?}");
        assert_eq!(at(&problems[1]).0, 4, "{problems:?}");
        let problems = check("[placement]\nsuspect_after_ms = 9000\ngrace_ms = 5000\n");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].kind, ProblemKind::Invalid);
        let problems = check("[placement]\nmax_moves = 3\n");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].kind, ProblemKind::UnknownKey, "{problems:?}");
    }

    #[test]
    fn shutdown_grace_is_bounded_and_reported_at_its_line() {
        assert_eq!(check("[node]\nshutdown_grace_ms = 30000\n"), vec![]);
        let problems = check("[node]\nid = 2\nshutdown_grace_ms = 600001\n");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(at(&problems[0]).0, 3);
        assert_eq!(problems[0].kind, ProblemKind::Invalid);
        assert!(
            problems[0].message.contains("node.shutdown_grace_ms"),
            "{problems:?}"
        );
        let problems = check("[node]\nshutdown_grace_ms = \"10s\"\n");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].kind, ProblemKind::WrongType);
    }

    #[test]
    fn log_format_and_metrics_token_are_checked() {
        assert_eq!(
            check("[log]\nformat = \"json\"\n[metrics]\nrequire_token = true\n"),
            vec![]
        );
        let problems = check("[log]\nformat = \"xml\"\n");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].kind, ProblemKind::WrongType);
        assert_eq!(at(&problems[0]).0, 2);
        let problems = check("[metrics]\nrequire_tokens = true\n");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].kind, ProblemKind::UnknownKey);
    }

    #[test]
    fn with_env_the_environment_overrides_the_file() {
        let text = "[peer]\ninsecure = true\njoin = \"10.0.0.1:7900\"\n";
        let env = |pairs: &[(&str, &str)]| CheckOptions {
            check_files: false,
            env: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        };
        // The file alone lacks peer.listen; QUIRE_PEER_LISTEN supplies it.
        assert_eq!(check(text).len(), 1);
        assert_eq!(
            check_str(text, &env(&[("QUIRE_PEER_LISTEN", "10.0.0.2:7900")])),
            vec![]
        );
        let problems = check_str(text, &env(&[("QUIRE_NODE_ID", "one")]));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].kind, ProblemKind::Environment);
        assert!(
            problems[0].message.contains("QUIRE_NODE_ID"),
            "{problems:?}"
        );
    }

    #[test]
    fn the_report_has_one_line_per_problem_and_a_summary() {
        let report = Report {
            file: PathBuf::from("q.toml"),
            problems: check("[node]\nlisen = 1\nid = 0\n"),
        };
        let text = report.to_string();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("q.toml:2:1: unknown key"), "{text}");
        assert!(lines[1].starts_with("q.toml:3:1: node.id"), "{text}");
        assert_eq!(lines[2], "q.toml: 2 problems");
        assert_eq!(report.exit_code(), 1);
        let clean = Report {
            file: PathBuf::from("q.toml"),
            problems: vec![],
        };
        assert_eq!(clean.to_string(), "q.toml: ok\n");
        assert_eq!(clean.exit_code(), 0);
    }

    #[test]
    fn an_unreadable_file_is_an_error_not_a_report() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_file(&dir.path().join("missing.toml"), &CheckOptions::default());
        assert!(matches!(err, Err(CheckError::Read { .. })), "{err:?}");
    }
}

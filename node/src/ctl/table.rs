//! Plain-text tables for `quire ctl`'s human-readable output.

use std::io::Write;

use serde_json::Value;

/// Widest cell shown, in characters; longer text is cut with an ellipsis.
const MAX_CELL_CHARS: usize = 60;

/// A JSON value as one table cell: strings bare, lists comma-joined, null as "-".
pub fn cell(value: &Value) -> String {
    let text = match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    };
    if text.chars().count() > MAX_CELL_CHARS {
        let cut: String = text.chars().take(MAX_CELL_CHARS - 1).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// Milliseconds since the Unix epoch as an RFC 3339 UTC time, to the second.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm), for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A cell for the JSON field `key`: times (`*_at_ms`) as UTC, role scopes as text,
/// everything else by [`cell`].
pub fn field_cell(key: &str, value: &Value) -> String {
    match value.as_u64() {
        Some(ms) if key.ends_with("_at_ms") => utc(ms),
        _ if key == "scope" && value["level"].is_string() => scope_text(value),
        _ => cell(value),
    }
}

/// A role scope object as `global`, `tenant T` or `workspace T/W`.
pub fn scope_text(scope: &Value) -> String {
    let text = |k: &str| scope[k].as_str().unwrap_or("?").to_owned();
    match scope["level"].as_str() {
        Some("global") => "global".to_owned(),
        Some("tenant") => format!("tenant {}", text("tenant")),
        Some("workspace") => format!("workspace {}/{}", text("tenant"), text("workspace")),
        _ => cell(scope),
    }
}

/// Rows under a header, columns padded to their widest cell.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<'a>(header: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            header: header.into_iter().map(str::to_owned).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: impl IntoIterator<Item = String>) {
        self.rows.push(cells.into_iter().collect());
    }

    pub fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        let line = |cells: &[String], out: &mut dyn Write| -> std::io::Result<()> {
            let mut text = String::new();
            for (i, c) in cells.iter().enumerate() {
                let w = widths.get(i).copied().unwrap_or(0);
                if i + 1 == cells.len() {
                    text.push_str(c);
                } else {
                    text.push_str(&format!("{c:<w$}  "));
                }
            }
            writeln!(out, "{}", text.trim_end())
        };
        line(&self.header, out)?;
        for row in &self.rows {
            line(row, out)?;
        }
        if self.rows.is_empty() {
            writeln!(out, "(none)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let mut t = Table::new(["ID", "NAME"]);
        t.row(["a".to_owned(), "Alpha".to_owned()]);
        t.row(["long-id".to_owned(), "B".to_owned()]);
        let mut out = Vec::new();
        t.write(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ID       NAME\na        Alpha\nlong-id  B\n"
        );
        assert_eq!(cell(&serde_json::json!(["x", "y"])), "x,y");
        assert_eq!(cell(&Value::Null), "-");
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_825_600_000), "2000-02-29T12:00:00Z");
        assert_eq!(utc(1_796_409_384_002), "2026-12-04T18:36:24Z");
        assert_eq!(
            field_cell("issued_at_ms", &serde_json::json!(0)),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(field_cell("expires_at_ms", &Value::Null), "-");
        let scope =
            serde_json::json!({"level": "workspace", "tenant": "acme", "workspace": "docs"});
        assert_eq!(field_cell("scope", &scope), "workspace acme/docs");
        assert_eq!(
            scope_text(&serde_json::json!({"level": "global"})),
            "global"
        );
    }
}

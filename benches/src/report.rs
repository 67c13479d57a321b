//! Formatting of load results, and of every benchmark's figures (`Figures`): a plain-text
//! table for the terminal and Markdown for reports.
//! Latencies are measured in microseconds and shown in milliseconds.

use std::fmt::Write as _;

use crate::load::LoadResult;

/// A ratio with two decimals, or two significant figures below 0.1 (`0.0019` -> `"0.0019"`).
pub fn ratio(r: f64) -> String {
    if r > 0.0 && r < 0.1 {
        let digits = (-r.log10()).floor() as usize + 2;
        format!("{r:.digits$}")
    } else {
        format!("{r:.2}")
    }
}

/// `1234` µs -> `"1.23"` (milliseconds, two decimals).
pub fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// A column of a benchmark's table: its title, its width in the terminal, and whether it is
/// left-aligned (else right-aligned, in the terminal and in Markdown).
pub struct Column {
    pub title: &'static str,
    pub width: usize,
    pub left: bool,
}

impl Column {
    pub const fn left(title: &'static str, width: usize) -> Column {
        Column {
            title,
            width,
            left: true,
        }
    }

    pub const fn right(title: &'static str, width: usize) -> Column {
        Column {
            title,
            width,
            left: false,
        }
    }
}

/// A benchmark's report as it is printed: a title, a table of rows under `COLUMNS`, and lines
/// under it (what was measured besides, the setup, the machine, the command). The JSON is
/// the report itself.
pub trait Figures: serde::Serialize {
    const TITLE: &'static str;
    const COLUMNS: &'static [Column];
    type Row: AsRef<[String]>;

    fn rows(&self) -> Vec<Self::Row>;

    fn lines(&self) -> Vec<String>;

    /// For the terminal: the title, the table (each cell padded to its column's width, one
    /// space between), the lines.
    fn to_text(&self) -> String {
        let mut out = format!("{}\n", Self::TITLE);
        let titles: Vec<String> = Self::COLUMNS.iter().map(|c| c.title.to_owned()).collect();
        for row in std::iter::once(titles.as_slice()).chain(self.rows().iter().map(AsRef::as_ref)) {
            let cells: Vec<String> = row
                .iter()
                .zip(Self::COLUMNS)
                .map(|(cell, c)| {
                    let w = c.width;
                    if c.left {
                        format!("{cell:<w$}")
                    } else {
                        format!("{cell:>w$}")
                    }
                })
                .collect();
            let _ = writeln!(out, "{}", cells.join(" "));
        }
        for line in self.lines() {
            let _ = writeln!(out, "{line}");
        }
        out
    }

    /// For a report: the title as a heading, the table, the lines as a list.
    fn to_markdown(&self) -> String {
        let mut out = format!("### {}\n\n", Self::TITLE);
        let titles: Vec<&str> = Self::COLUMNS.iter().map(|c| c.title).collect();
        let _ = writeln!(out, "| {} |", titles.join(" | "));
        out.push('|');
        for c in Self::COLUMNS {
            out.push_str(if c.left { "---|" } else { "---:|" });
        }
        out.push('\n');
        for r in self.rows() {
            let _ = writeln!(out, "| {} |", r.as_ref().join(" | "));
        }
        out.push('\n');
        for line in self.lines() {
            let _ = writeln!(out, "- {line}");
        }
        out
    }
}

/// Columns of the load tables.
const COLUMNS: usize = 9;

/// The column titles; `ops` names what one operation is ("writes", "calls").
fn titles(ops: &str) -> [String; COLUMNS] {
    [
        "writers".to_owned(),
        format!("{ops}/s"),
        "p50 ms".to_owned(),
        "p95 ms".to_owned(),
        "p99 ms".to_owned(),
        "p99.9 ms".to_owned(),
        "max ms".to_owned(),
        "retries".to_owned(),
        "errors".to_owned(),
    ]
}

fn cells(r: &LoadResult) -> [String; COLUMNS] {
    [
        r.writers.to_string(),
        format!("{:.1}", r.ok_per_sec),
        ms(r.latency_us.p50),
        ms(r.latency_us.p95),
        ms(r.latency_us.p99),
        ms(r.latency_us.p999),
        ms(r.latency_us.max),
        r.retries.to_string(),
        r.errors.to_string(),
    ]
}

/// A right-aligned plain-text table, one row per result.
pub fn text_table(ops: &str, results: &[&LoadResult]) -> String {
    let titles = titles(ops);
    let rows: Vec<[String; COLUMNS]> = results.iter().map(|r| cells(r)).collect();
    let widths: Vec<usize> = (0..COLUMNS)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([titles[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in std::iter::once(&titles).chain(rows.iter()) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  "));
    }
    out
}

/// A Markdown table, one row per result.
pub fn markdown_table(ops: &str, results: &[&LoadResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", titles(ops).join(" | "));
    let _ = writeln!(out, "|{}", "---:|".repeat(COLUMNS));
    for r in results {
        let _ = writeln!(out, "| {} |", cells(r).join(" | "));
    }
    out
}

/// The distinct error messages of all results, each once, prefixed by its writer count.
pub fn error_lines(results: &[&LoadResult]) -> Vec<String> {
    results
        .iter()
        .flat_map(|r| {
            r.error_samples
                .iter()
                .map(move |e| format!("{} writers: {e}", r.writers))
        })
        .collect()
}

/// For each result whose operations were retried: the latency of their last attempts
/// alone (what the server took once it admitted the request).
pub fn attempt_lines(results: &[&LoadResult]) -> Vec<String> {
    results
        .iter()
        .filter(|r| r.retries > 0)
        .map(|r| {
            let p = &r.attempt_latency_us;
            format!(
                "{} writers, last attempt alone: p50 {} ms, p95 {} ms, p99 {} ms, max {} ms",
                r.writers,
                ms(p.p50),
                ms(p.p95),
                ms(p.p99),
                ms(p.max)
            )
        })
        .collect()
}

/// Quotes one command-line argument for a POSIX shell when it needs it.
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,:@+".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// The command line as one shell-pasteable string.
pub fn command_line(args: impl IntoIterator<Item = String>) -> String {
    args.into_iter()
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{LoadSpec, Percentiles, Worker, run_closed_loop};
    use std::time::Duration;

    struct Instant10ms;
    impl Worker for Instant10ms {
        async fn call(&mut self) -> Result<(), String> {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(())
        }
    }

    async fn result(writers: usize) -> LoadResult {
        let spec = LoadSpec {
            warmup: Duration::ZERO,
            duration: Duration::from_millis(100),
            op_timeout: Duration::from_secs(1),
        };
        run_closed_loop(&spec, (0..writers).map(|_| Instant10ms).collect())
            .await
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn tables_show_every_level() {
        let (a, b) = (result(1).await, result(16).await);
        let text = text_table("writes", &[&a, &b]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains("writes/s") && lines[0].contains("p99 ms"));
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(row[0], "16");
        assert_eq!(row[1], "1600.0");
        assert_eq!(row[7], "0");
        assert_eq!(row[8], "0");
        assert!(lines[0].contains("p99.9 ms"));
        // p99.9 of 10 ms operations (the histogram keeps 3 significant figures).
        assert!(row[5] == "10.00" || row[5] == "10.01", "{}", row[5]);
        // All rows line up.
        assert!(lines.iter().all(|l| l.len() == lines[0].len()));

        assert!(attempt_lines(&[&a, &b]).is_empty());
        let mut retried = b.clone();
        retried.retries = 3;
        retried.attempt_latency_us.p99 = 2500;
        let lines = attempt_lines(&[&a, &retried]);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("16 writers") && lines[0].contains("p99 2.50 ms"));

        let md = markdown_table("writes", &[&a]);
        assert!(md.starts_with("| writers | writes/s |"));
        assert!(md.contains("| 1 | 100.0 | 10.0"), "{md}");
    }

    #[derive(serde::Serialize)]
    struct Steps;

    impl Figures for Steps {
        const TITLE: &'static str = "Steps";
        const COLUMNS: &'static [Column] = &[Column::left("step", 6), Column::right("ms", 5)];
        type Row = [String; 2];

        fn rows(&self) -> Vec<[String; 2]> {
            vec![["start".to_owned(), "1.50".to_owned()]]
        }

        fn lines(&self) -> Vec<String> {
            vec!["command: quire-bench steps".to_owned()]
        }
    }

    #[test]
    fn figures_print_as_a_padded_table_and_as_markdown() {
        assert_eq!(
            Steps.to_text(),
            "Steps\nstep      ms\nstart   1.50\ncommand: quire-bench steps\n"
        );
        assert_eq!(
            Steps.to_markdown(),
            "### Steps\n\n| step | ms |\n|---|---:|\n| start | 1.50 |\n\n- command: quire-bench steps\n"
        );
    }

    #[test]
    fn milliseconds_and_quoting() {
        assert_eq!(ms(1234), "1.23");
        assert_eq!(ms(0), "0.00");
        assert_eq!(ratio(1.234), "1.23");
        assert_eq!(ratio(0.0019), "0.0019");
        assert_eq!(ratio(0.05), "0.050");
        assert_eq!(ratio(0.0), "0.00");
        assert_eq!(Percentiles::default().p99, 0);
        assert_eq!(shell_quote("--writers"), "--writers");
        assert_eq!(shell_quote("1,16,256"), "1,16,256");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(
            command_line(["quire-bench".to_owned(), "x y".to_owned()]),
            "quire-bench 'x y'"
        );
    }
}

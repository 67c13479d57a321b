//! Log output on stderr, filtered by `QUIRE_LOG` (or `RUST_LOG`), `info` by default.
//!
//! Two formats (`--log-format`, `QUIRE_LOG_FORMAT`, `log.format`): `text`, human-readable
//! lines, and `json`, one object per line with the event's fields and the fields of every
//! span it happened in flattened beside them (a tool call's lines carry `node`, `tenant`,
//! `workspace`, `principal`, `session` and `tool`), plus `spans` (their names, outermost
//! first).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use quire_raft::clock::{Clock, SystemClock};

use crate::config::{Config, LogFormat};

fn filter() -> EnvFilter {
    std::env::var("QUIRE_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info,openraft=warn,sled=warn,h2=warn,hyper=warn"))
}

/// Installs the process's log output in `format` (once; later calls change nothing).
pub fn init(format: LogFormat) {
    match format {
        LogFormat::Text => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter())
                .with_writer(std::io::stderr)
                .try_init();
        }
        LogFormat::Json => {
            let _ = tracing_subscriber::registry()
                .with(filter())
                .with(JsonLayer::new(std::io::stderr))
                .try_init();
        }
    }
}

/// The log format before the configuration is loaded: the `--log-format` flag, else
/// `QUIRE_LOG_FORMAT`, else `log.format` of the config file if one is named and readable
/// (its problems are reported when it is loaded for real), else `text`.
pub fn format_for(
    flag: Option<LogFormat>,
    env: Option<String>,
    config_file: Option<&Path>,
) -> LogFormat {
    if let Some(format) = flag {
        return format;
    }
    if let Some(format) = env.and_then(|v| v.parse().ok()) {
        return format;
    }
    config_file
        .and_then(|path| Config::from_file(path).ok())
        .map_or(LogFormat::Text, |c| c.log.format)
}

/// Fields recorded on a span, kept in its extensions.
#[derive(Debug, Default)]
struct SpanFields(BTreeMap<String, Value>);

struct JsonVisitor<'a>(&'a mut BTreeMap<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
}

/// Writes each event as one JSON object per line to what `W` makes.
pub struct JsonLayer<W> {
    make_writer: W,
}

impl<W> JsonLayer<W> {
    pub fn new(make_writer: W) -> Self {
        Self { make_writer }
    }
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = SpanFields::default();
        attrs.record(&mut JsonVisitor(&mut fields.0));
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            values.record(&mut JsonVisitor(&mut fields.0));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        let mut spans = Vec::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                spans.push(Value::String(span.name().to_owned()));
                if let Some(f) = span.extensions().get::<SpanFields>() {
                    fields.extend(f.0.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        event.record(&mut JsonVisitor(&mut fields));
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::String(rfc3339_ms(SystemClock.now_ms())),
        );
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_owned()));
        for (k, v) in fields {
            // The fixed keys stay what they are; a field of the same name goes beside them.
            let key = if line.contains_key(&k) {
                format!("field.{k}")
            } else {
                k
            };
            line.insert(key, v);
        }
        if !spans.is_empty() {
            line.insert("spans".into(), Value::Array(spans));
        }
        let Ok(mut text) = serde_json::to_string(&Value::Object(line)) else {
            return;
        };
        text.push('\n');
        let _ = self.make_writer.make_writer().write_all(text.as_bytes());
    }
}

/// `2026-12-05T00:11:55.123Z` for milliseconds since the Unix epoch.
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    #[test]
    fn json_lines_carry_the_fields_of_their_spans() {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(JsonLayer::new(capture.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!("request", node = 3u64);
            let _o = outer.enter();
            let inner = tracing::info_span!("tool_call", tenant = "acme", session = "s-1");
            let _i = inner.enter();
            tracing::info!(outcome = "ok", latency_ms = 12u64, "tool call");
        });
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["node"], 3);
        assert_eq!(line["tenant"], "acme");
        assert_eq!(line["session"], "s-1");
        assert_eq!(line["outcome"], "ok");
        assert_eq!(line["latency_ms"], 12);
        assert_eq!(line["message"], "tool call");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["spans"], serde_json::json!(["request", "tool_call"]));
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn timestamps_are_rfc3339_in_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_796_430_715_007), "2026-12-05T00:31:55.007Z");
    }

    #[test]
    fn the_flag_beats_the_environment_which_beats_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("quire.toml");
        std::fs::write(&file, "[log]\nformat = \"json\"\n").unwrap();
        assert_eq!(format_for(None, None, Some(&file)), LogFormat::Json);
        assert_eq!(
            format_for(None, Some("text".into()), Some(&file)),
            LogFormat::Text
        );
        assert_eq!(
            format_for(Some(LogFormat::Json), Some("text".into()), None),
            LogFormat::Json
        );
        assert_eq!(format_for(None, None, None), LogFormat::Text);
    }
}

//! Pure conversions between Notion's JSON and Markdown: blocks → Markdown (for reading
//! pages), property values → text, and Markdown → blocks (for writing content), within
//! Notion's payload limits (rich text items of at most 2000 characters, at most 100 per
//! block, at most two nesting levels per request). No I/O here.

use serde_json::{Map, Value, json};

use super::ids::notion_url;

/// The largest Markdown document accepted for writing.
pub const MAX_MARKDOWN_BYTES: usize = 200 * 1024;
/// The most blocks one Markdown document may turn into (counting nested ones).
pub const MAX_BLOCKS: usize = 1000;
/// Notion's limit on one rich text item's content (counted in UTF-16 units, the stricter
/// reading of "2000 characters").
pub const MAX_RICH_TEXT_UNITS: usize = 2000;
/// Notion's limit on the rich text items of one block.
pub const MAX_RICH_TEXT_ITEMS: usize = 100;
/// Nesting levels below the top-level blocks that one request may carry; deeper list
/// items are attached at this depth.
pub const MAX_NESTING: usize = 2;

/// Why Markdown could not be turned into blocks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarkdownError {
    #[error("the Markdown is {bytes} bytes; at most {max} bytes are accepted per call")]
    TooLarge { bytes: usize, max: usize },
    #[error("the Markdown makes {blocks} blocks; at most {max} are accepted per call")]
    TooManyBlocks { blocks: usize, max: usize },
}

// ---------------------------------------------------------------------------------------
// Notion → Markdown
// ---------------------------------------------------------------------------------------

/// The plain text of a rich text array.
pub fn plain_text(rich: &Value) -> String {
    let mut out = String::new();
    for item in rich.as_array().map(Vec::as_slice).unwrap_or_default() {
        if let Some(t) = item.get("plain_text").and_then(Value::as_str) {
            out.push_str(t);
        } else if let Some(t) = item.pointer("/text/content").and_then(Value::as_str) {
            out.push_str(t);
        } else if let Some(t) = item.pointer("/equation/expression").and_then(Value::as_str) {
            out.push_str(t);
        }
    }
    out
}

/// Wraps `text` in `marker` on both sides, keeping surrounding whitespace outside the
/// markers (`** x**` is not bold in Markdown).
fn wrap(text: &str, open: &str, close: &str) -> String {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return text.to_string();
    }
    let start = text.len() - text.trim_start().len();
    let end = text.trim_end().len();
    format!("{}{open}{trimmed}{close}{}", &text[..start], &text[end..])
}

/// A rich text array as inline Markdown: bold, italic, strikethrough, code, links,
/// equations.
pub fn rich_text_to_markdown(rich: &Value) -> String {
    let mut out = String::new();
    for item in rich.as_array().map(Vec::as_slice).unwrap_or_default() {
        let ty = item.get("type").and_then(Value::as_str).unwrap_or("text");
        if ty == "equation" {
            let expr = item
                .pointer("/equation/expression")
                .and_then(Value::as_str)
                .or_else(|| item.get("plain_text").and_then(Value::as_str))
                .unwrap_or("");
            out.push_str(&format!("${expr}$"));
            continue;
        }
        let mut text = item
            .get("plain_text")
            .and_then(Value::as_str)
            .or_else(|| item.pointer("/text/content").and_then(Value::as_str))
            .unwrap_or("")
            .to_string();
        let ann = |k: &str| {
            item.pointer(&format!("/annotations/{k}"))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        if ann("code") {
            let fence = if text.contains('`') { "``" } else { "`" };
            text = wrap(&text, fence, fence);
        }
        if ann("strikethrough") {
            text = wrap(&text, "~~", "~~");
        }
        if ann("italic") {
            text = wrap(&text, "*", "*");
        }
        if ann("bold") {
            text = wrap(&text, "**", "**");
        }
        let link = item
            .pointer("/text/link/url")
            .and_then(Value::as_str)
            .or_else(|| item.get("href").and_then(Value::as_str));
        if let Some(url) = link
            && !text.trim().is_empty()
        {
            text = format!("[{text}]({url})");
        }
        out.push_str(&text);
    }
    out
}

fn user_text(u: &Value) -> String {
    u.get("name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| u.get("id").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default()
}

fn date_text(d: &Value) -> String {
    let start = d.get("start").and_then(Value::as_str).unwrap_or("");
    match d.get("end").and_then(Value::as_str) {
        Some(end) => format!("{start} → {end}"),
        None => start.to_string(),
    }
}

fn number_text(n: &Value) -> String {
    match n {
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// A page property value as one line of text.
pub fn property_to_text(prop: &Value) -> String {
    let ty = prop.get("type").and_then(Value::as_str).unwrap_or("");
    let v = prop.get(ty).unwrap_or(&Value::Null);
    let names = |arr: &Value, f: &dyn Fn(&Value) -> String| -> String {
        arr.as_array()
            .map(|a| {
                a.iter()
                    .map(f)
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    match ty {
        "title" | "rich_text" => plain_text(v),
        "number" => number_text(v),
        "select" | "status" => v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        "multi_select" => names(v, &|o| {
            o.get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        }),
        "date" => date_text(v),
        "checkbox" => match v.as_bool() {
            Some(true) => "Yes".into(),
            Some(false) => "No".into(),
            None => String::new(),
        },
        "people" => names(v, &user_text),
        "created_by" | "last_edited_by" => user_text(v),
        "url" | "email" | "phone_number" | "created_time" | "last_edited_time" => {
            v.as_str().unwrap_or("").to_string()
        }
        "relation" => names(v, &|o| {
            o.get("id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        }),
        "files" => names(v, &|o| {
            o.get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        }),
        "formula" => {
            let fty = v.get("type").and_then(Value::as_str).unwrap_or("");
            let fv = v.get(fty).unwrap_or(&Value::Null);
            match fty {
                "string" => fv.as_str().unwrap_or("").to_string(),
                "number" => number_text(fv),
                "boolean" => fv.as_bool().map(|b| b.to_string()).unwrap_or_default(),
                "date" => date_text(fv),
                _ => String::new(),
            }
        }
        "rollup" => {
            let rty = v.get("type").and_then(Value::as_str).unwrap_or("");
            let rv = v.get(rty).unwrap_or(&Value::Null);
            match rty {
                "number" => number_text(rv),
                "date" => date_text(rv),
                "array" => names(rv, &property_to_text),
                _ => String::new(),
            }
        }
        "unique_id" => {
            let n = number_text(v.get("number").unwrap_or(&Value::Null));
            match v.get("prefix").and_then(Value::as_str) {
                Some(p) if !n.is_empty() => format!("{p}-{n}"),
                _ => n,
            }
        }
        "verification" => v
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        _ => String::new(),
    }
}

/// The title of a page (its `title`-typed property), a database or a data source.
pub fn object_title(obj: &Value) -> String {
    if let Some(t) = obj.get("title").filter(|t| t.is_array()) {
        return plain_text(t);
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for p in props.values() {
            if p.get("type").and_then(Value::as_str) == Some("title") {
                return property_to_text(p);
            }
        }
    }
    String::new()
}

fn is_list_item(ty: &str) -> bool {
    matches!(ty, "bulleted_list_item" | "numbered_list_item" | "to_do")
}

fn indent_lines(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{prefix}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn quote_lines(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                ">".to_string()
            } else {
                format!("> {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn file_url(v: &Value) -> Option<&str> {
    v.pointer("/external/url")
        .or_else(|| v.pointer("/file/url"))
        .or_else(|| v.get("url"))
        .and_then(Value::as_str)
}

fn children_of<'a>(block: &'a Value, ty: &str) -> &'a [Value] {
    block
        .get(ty)
        .and_then(|b| b.get("children"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Renders blocks as Markdown. Children are read from `block[type].children` (the shape
/// Notion accepts on writes, and where the fetch tool attaches the children it read).
pub fn blocks_to_markdown(blocks: &[Value]) -> String {
    let mut out = String::new();
    let mut prev_list: Option<&str> = None;
    let mut number = 0u64;
    for block in blocks {
        let ty = block.get("type").and_then(Value::as_str).unwrap_or("");
        if ty == "numbered_list_item" {
            number += 1;
        } else {
            number = 0;
        }
        let rendered = render_block(block, ty, number);
        if rendered.is_empty() {
            continue;
        }
        let list = is_list_item(ty).then_some(ty);
        if !out.is_empty() {
            // Items of one list stay together; a different kind of list starts a new one.
            out.push_str(if list.is_some() && list == prev_list {
                "\n"
            } else {
                "\n\n"
            });
        }
        out.push_str(&rendered);
        prev_list = list;
    }
    out
}

/// A text line that starts like a code fence would swallow what follows when the Markdown
/// is read back: escape its first character.
fn escape_fences(text: &str) -> String {
    if !text.contains("```") && !text.contains("~~~") {
        return text.to_string();
    }
    text.split('\n')
        .map(|line| {
            let t = line.trim_start();
            if t.starts_with("```") || t.starts_with("~~~") {
                let indent = &line[..line.len() - t.len()];
                format!("{indent}\\{t}")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn render_block(block: &Value, ty: &str, number: u64) -> String {
    let body = block.get(ty).unwrap_or(&Value::Null);
    let text = escape_fences(&rich_text_to_markdown(
        body.get("rich_text").unwrap_or(&Value::Null),
    ));
    let children = children_of(block, ty);
    let kids = blocks_to_markdown(children);
    let with_kids = |head: String, indent: &str| -> String {
        if kids.is_empty() {
            head
        } else {
            format!("{head}\n{}", indent_lines(&kids, indent))
        }
    };
    match ty {
        "paragraph" => with_kids(text, "  "),
        "heading_1" | "heading_2" | "heading_3" => {
            let level = &ty[ty.len() - 1..];
            let hashes = "#".repeat(level.parse::<usize>().unwrap_or(1));
            let head = format!("{hashes} {text}");
            if kids.is_empty() {
                head
            } else {
                format!("{head}\n\n{kids}")
            }
        }
        "bulleted_list_item" => with_kids(format!("- {text}"), "  "),
        "numbered_list_item" => {
            let marker = format!("{number}. ");
            with_kids(format!("{marker}{text}"), &" ".repeat(marker.len()))
        }
        "to_do" => {
            let checked = body
                .get("checked")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let mark = if checked { "x" } else { " " };
            with_kids(format!("- [{mark}] {text}"), "  ")
        }
        "toggle" => {
            if kids.is_empty() {
                format!("<details>\n<summary>{text}</summary>\n</details>")
            } else {
                format!("<details>\n<summary>{text}</summary>\n\n{kids}\n</details>")
            }
        }
        "quote" => {
            let inner = if kids.is_empty() {
                text
            } else {
                format!("{text}\n\n{kids}")
            };
            quote_lines(&inner)
        }
        "callout" => {
            let icon = body
                .pointer("/icon/emoji")
                .and_then(Value::as_str)
                .map(|e| format!("{e} "))
                .unwrap_or_default();
            let inner = format!("{icon}{text}");
            let inner = if kids.is_empty() {
                inner
            } else {
                format!("{inner}\n\n{kids}")
            };
            quote_lines(&inner)
        }
        "code" => {
            let lang = body.get("language").and_then(Value::as_str).unwrap_or("");
            let lang = if lang == "plain text" { "" } else { lang };
            let code = plain_text(body.get("rich_text").unwrap_or(&Value::Null));
            let fence = if code.contains("```") { "````" } else { "```" };
            format!("{fence}{lang}\n{code}\n{fence}")
        }
        "divider" => "---".into(),
        "equation" => {
            let expr = body.get("expression").and_then(Value::as_str).unwrap_or("");
            format!("$$\n{expr}\n$$")
        }
        "child_page" | "child_database" => {
            let title = body.get("title").and_then(Value::as_str).unwrap_or("");
            let title = if title.is_empty() { "Untitled" } else { title };
            let id = block.get("id").and_then(Value::as_str).unwrap_or("");
            let icon = if ty == "child_page" {
                "📄"
            } else {
                "🗃️"
            };
            format!("{icon} [{title}]({})", notion_url(id))
        }
        "link_to_page" => {
            let target_ty = body.get("type").and_then(Value::as_str).unwrap_or("");
            match body.get(target_ty).and_then(Value::as_str) {
                Some(id) => format!("→ [linked page]({})", notion_url(id)),
                None => String::new(),
            }
        }
        "image" => {
            let caption = plain_text(body.get("caption").unwrap_or(&Value::Null));
            match file_url(body) {
                Some(url) => format!("![{caption}]({url})"),
                None => String::new(),
            }
        }
        "bookmark" | "embed" | "link_preview" | "video" | "audio" | "file" | "pdf" => {
            let caption = plain_text(body.get("caption").unwrap_or(&Value::Null));
            let name = body.get("name").and_then(Value::as_str).unwrap_or("");
            match file_url(body) {
                Some(url) => {
                    let label = [caption.as_str(), name, url]
                        .into_iter()
                        .find(|s| !s.is_empty())
                        .unwrap_or(url);
                    format!("[{label}]({url})")
                }
                None => String::new(),
            }
        }
        "table" => render_table(children),
        "column_list" | "column" | "synced_block" | "template" => kids,
        "table_of_contents" | "breadcrumb" => String::new(),
        "" => String::new(),
        other => format!("<!-- unsupported block: {other} -->"),
    }
}

fn render_table(rows: &[Value]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .filter_map(|r| r.pointer("/table_row/cells").and_then(Value::as_array))
        .map(|cells| {
            cells
                .iter()
                .map(|c| {
                    rich_text_to_markdown(c)
                        .replace('|', "\\|")
                        .replace('\n', " ")
                })
                .collect()
        })
        .collect();
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    if width == 0 {
        return String::new();
    }
    let line = |cells: &[String]| {
        let mut padded: Vec<&str> = cells.iter().map(String::as_str).collect();
        padded.resize(width, "");
        format!("| {} |", padded.join(" | "))
    };
    let mut out = vec![line(&rows[0]), format!("|{}", " --- |".repeat(width))];
    out.extend(rows[1..].iter().map(|r| line(r)));
    out.join("\n")
}

// ---------------------------------------------------------------------------------------
// Markdown → Notion
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Ann {
    bold: bool,
    italic: bool,
    strike: bool,
    code: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct Span {
    text: String,
    ann: Ann,
    link: Option<String>,
}

fn run_len(chars: &[char], at: usize, c: char) -> usize {
    chars[at..].iter().take_while(|x| **x == c).count()
}

/// The start of the next run of exactly `len` backticks at or after `from`.
fn find_backtick_run(chars: &[char], from: usize, len: usize) -> Option<usize> {
    let mut j = from;
    while j < chars.len() {
        if chars[j] == '`' {
            let r = run_len(chars, j, '`');
            if r == len {
                return Some(j);
            }
            j += r;
        } else {
            j += 1;
        }
    }
    None
}

/// Where the emphasis opened by `want` copies of `c` closes (start of the closing run).
fn find_closing(chars: &[char], from: usize, c: char, want: usize) -> Option<usize> {
    let n = chars.len();
    let mut j = from;
    while j < n {
        let ch = chars[j];
        if ch == '\\' {
            j += 2;
            continue;
        }
        if ch == '`' {
            let r = run_len(chars, j, '`');
            match find_backtick_run(chars, j + r, r) {
                Some(close) => j = close + r,
                None => j += r,
            }
            continue;
        }
        if ch == c {
            let r = run_len(chars, j, c);
            let ok_before = j > from && !chars[j - 1].is_whitespace();
            let end = j + r;
            let ok_after = c != '_' || end >= n || !chars[end].is_alphanumeric();
            if ok_before && ok_after {
                if r == want {
                    return Some(j);
                }
                if r == 3 && want < 3 {
                    return Some(j + 3 - want);
                }
            }
            j += r;
            continue;
        }
        j += 1;
    }
    None
}

/// For `[text](url)` starting at `open`: (end of text, start of url, end of url).
fn find_link(chars: &[char], open: usize) -> Option<(usize, usize, usize)> {
    let n = chars.len();
    let mut depth = 0usize;
    let mut j = open;
    let text_end = loop {
        if j >= n {
            return None;
        }
        match chars[j] {
            '\\' => j += 1,
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    break j;
                }
            }
            _ => {}
        }
        j += 1;
    };
    if chars.get(text_end + 1) != Some(&'(') {
        return None;
    }
    let url_start = text_end + 2;
    let mut parens = 0usize;
    let mut k = url_start;
    while k < n {
        match chars[k] {
            '(' => parens += 1,
            ')' if parens == 0 => return Some((text_end, url_start, k)),
            ')' => parens -= 1,
            c if c.is_whitespace() => return None,
            _ => {}
        }
        k += 1;
    }
    None
}

fn linkable(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://") || url.starts_with("mailto:")
}

fn flush(buf: &mut String, ann: Ann, link: Option<&str>, out: &mut Vec<Span>) {
    if !buf.is_empty() {
        out.push(Span {
            text: std::mem::take(buf),
            ann,
            link: link.map(str::to_string),
        });
    }
}

fn parse_inline(chars: &[char], ann: Ann, link: Option<&str>, out: &mut Vec<Span>) {
    let n = chars.len();
    let mut buf = String::new();
    let mut i = 0;
    while i < n {
        let c = chars[i];
        if c == '\\' && i + 1 < n && chars[i + 1].is_ascii_punctuation() {
            buf.push(chars[i + 1]);
            i += 2;
            continue;
        }
        if c == '`' {
            let r = run_len(chars, i, '`');
            if let Some(close) = find_backtick_run(chars, i + r, r) {
                flush(&mut buf, ann, link, out);
                let inner: String = chars[i + r..close].iter().collect();
                let inner = if r > 1 {
                    inner.trim().to_string()
                } else {
                    inner
                };
                out.push(Span {
                    text: inner,
                    ann: Ann { code: true, ..ann },
                    link: link.map(str::to_string),
                });
                i = close + r;
                continue;
            }
            buf.extend(std::iter::repeat_n('`', r));
            i += r;
            continue;
        }
        if c == '['
            && link.is_none()
            && let Some((text_end, url_start, url_end)) = find_link(chars, i)
        {
            let url: String = chars[url_start..url_end].iter().collect();
            if linkable(&url) && text_end > i + 1 {
                flush(&mut buf, ann, link, out);
                parse_inline(&chars[i + 1..text_end], ann, Some(&url), out);
                i = url_end + 1;
                continue;
            }
        }
        if c == '*' || c == '_' || c == '~' {
            let r = run_len(chars, i, c);
            let next_ok = i + r < n && !chars[i + r].is_whitespace();
            let boundary_ok = c != '_' || i == 0 || !chars[i - 1].is_alphanumeric();
            let plan = match (c, r) {
                ('~', 2) => Some((
                    2,
                    Ann {
                        strike: true,
                        ..ann
                    },
                )),
                ('*' | '_', 1) => Some((
                    1,
                    Ann {
                        italic: true,
                        ..ann
                    },
                )),
                ('*' | '_', 2) => Some((2, Ann { bold: true, ..ann })),
                ('*' | '_', 3) => Some((
                    3,
                    Ann {
                        bold: true,
                        italic: true,
                        ..ann
                    },
                )),
                _ => None,
            };
            if next_ok
                && boundary_ok
                && let Some((want, inner_ann)) = plan
                && let Some(close) = find_closing(chars, i + want, c, want)
            {
                flush(&mut buf, ann, link, out);
                parse_inline(&chars[i + want..close], inner_ann, link, out);
                i = close + want;
                continue;
            }
            buf.extend(std::iter::repeat_n(c, r));
            i += r;
            continue;
        }
        buf.push(c);
        i += 1;
    }
    flush(&mut buf, ann, link, out);
}

/// Splits `text` into pieces of at most `max` UTF-16 units, never inside a character.
fn split_units(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut units = 0;
    for ch in text.chars() {
        let u = ch.len_utf16();
        if units + u > max {
            out.push(std::mem::take(&mut cur));
            units = 0;
        }
        cur.push(ch);
        units += u;
    }
    if !cur.is_empty() || out.is_empty() {
        out.push(cur);
    }
    out
}

fn span_items(span: &Span) -> Vec<Value> {
    split_units(&span.text, MAX_RICH_TEXT_UNITS)
        .into_iter()
        .filter(|t| !t.is_empty())
        .map(|content| {
            let mut text = Map::new();
            text.insert("content".into(), Value::String(content));
            if let Some(url) = &span.link {
                text.insert("link".into(), json!({ "url": url }));
            }
            let mut item = Map::new();
            item.insert("type".into(), json!("text"));
            item.insert("text".into(), Value::Object(text));
            let a = span.ann;
            if a != Ann::default() {
                let mut ann = Map::new();
                for (k, on) in [
                    ("bold", a.bold),
                    ("italic", a.italic),
                    ("strikethrough", a.strike),
                    ("code", a.code),
                ] {
                    if on {
                        ann.insert(k.into(), Value::Bool(true));
                    }
                }
                item.insert("annotations".into(), Value::Object(ann));
            }
            Value::Object(item)
        })
        .collect()
}

/// Inline Markdown (`**bold**`, `*italic*`, `~~strike~~`, `` `code` ``, `[text](url)`) as a
/// Notion rich text array, each item at most 2000 characters.
pub fn inline_to_rich_text(text: &str) -> Vec<Value> {
    let chars: Vec<char> = text.chars().collect();
    let mut spans = Vec::new();
    parse_inline(&chars, Ann::default(), None, &mut spans);
    // Merge neighbours that look the same, so long plain runs stay few items.
    let mut merged: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        match merged.last_mut() {
            Some(last) if last.ann == s.ann && last.link == s.link => last.text.push_str(&s.text),
            _ => merged.push(s),
        }
    }
    merged.iter().flat_map(span_items).collect()
}

/// Plain text (no Markdown) as a rich text array, each item at most 2000 characters.
pub fn plain_rich_text(text: &str) -> Vec<Value> {
    span_items(&Span {
        text: text.to_string(),
        ann: Ann::default(),
        link: None,
    })
}

const CODE_LANGUAGES: &[&str] = &[
    "abap",
    "abc",
    "agda",
    "arduino",
    "ascii art",
    "assembly",
    "bash",
    "basic",
    "bnf",
    "c",
    "c#",
    "c++",
    "clojure",
    "coffeescript",
    "coq",
    "css",
    "dart",
    "dhall",
    "diff",
    "docker",
    "ebnf",
    "elixir",
    "elm",
    "erlang",
    "f#",
    "flow",
    "fortran",
    "gherkin",
    "glsl",
    "go",
    "graphql",
    "groovy",
    "haskell",
    "hcl",
    "html",
    "idris",
    "java",
    "javascript",
    "json",
    "julia",
    "kotlin",
    "latex",
    "less",
    "lisp",
    "livescript",
    "llvm ir",
    "lua",
    "makefile",
    "markdown",
    "markup",
    "matlab",
    "mathematica",
    "mermaid",
    "nix",
    "notion formula",
    "objective-c",
    "ocaml",
    "pascal",
    "perl",
    "php",
    "plain text",
    "powershell",
    "prolog",
    "protobuf",
    "purescript",
    "python",
    "r",
    "racket",
    "reason",
    "ruby",
    "rust",
    "sass",
    "scala",
    "scheme",
    "scss",
    "shell",
    "smalltalk",
    "solidity",
    "sql",
    "swift",
    "toml",
    "typescript",
    "vb.net",
    "verilog",
    "vhdl",
    "visual basic",
    "webassembly",
    "xml",
    "yaml",
    "java/c/c++/c#",
];

/// A fence's info string as one of Notion's code languages (`plain text` when unknown).
pub fn code_language(info: &str) -> &'static str {
    let lang = info
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let alias = match lang.as_str() {
        "js" | "jsx" | "node" => "javascript",
        "ts" | "tsx" => "typescript",
        "py" | "python3" => "python",
        "rs" => "rust",
        "sh" | "zsh" | "console" => "shell",
        "yml" => "yaml",
        "cs" | "csharp" => "c#",
        "cpp" | "cxx" | "hpp" => "c++",
        "fsharp" => "f#",
        "dockerfile" => "docker",
        "md" => "markdown",
        "golang" => "go",
        "kt" => "kotlin",
        "rb" => "ruby",
        "tex" => "latex",
        "objc" => "objective-c",
        "proto" => "protobuf",
        "hs" => "haskell",
        "ex" | "exs" => "elixir",
        "tf" => "hcl",
        "ps1" | "pwsh" => "powershell",
        "make" => "makefile",
        "wasm" => "webassembly",
        other => other,
    };
    CODE_LANGUAGES
        .iter()
        .find(|l| **l == alias)
        .copied()
        .unwrap_or("plain text")
}

/// Builds blocks of type `ty` from rich text; more than 100 items make several blocks.
fn text_blocks(
    ty: &str,
    rich: Vec<Value>,
    extra: &[(&str, Value)],
    children: Vec<Value>,
) -> Vec<Value> {
    let mut groups: Vec<Vec<Value>> = rich
        .chunks(MAX_RICH_TEXT_ITEMS)
        .map(<[Value]>::to_vec)
        .collect();
    if groups.is_empty() {
        groups.push(Vec::new());
    }
    let last = groups.len() - 1;
    let mut children = Some(children);
    groups
        .into_iter()
        .enumerate()
        .map(|(i, group)| {
            let mut body = Map::new();
            body.insert("rich_text".into(), Value::Array(group));
            for (k, v) in extra {
                body.insert((*k).into(), v.clone());
            }
            if i == last
                && let Some(kids) = children.take()
                && !kids.is_empty()
            {
                body.insert("children".into(), Value::Array(kids));
            }
            json!({ "object": "block", "type": ty, ty: Value::Object(body) })
        })
        .collect()
}

#[derive(Debug)]
enum ListKind {
    Bullet,
    Numbered,
    Todo(bool),
}

#[derive(Debug)]
struct ListItem {
    indent: usize,
    kind: ListKind,
    text: String,
}

fn leading_indent(line: &str) -> usize {
    let mut n = 0;
    for c in line.chars() {
        match c {
            ' ' => n += 1,
            '\t' => n += 4,
            _ => break,
        }
    }
    n
}

fn parse_list_item(line: &str) -> Option<ListItem> {
    let indent = leading_indent(line);
    let t = line.trim_start();
    for marker in ["- ", "* ", "+ "] {
        if let Some(rest) = t.strip_prefix(marker) {
            for (box_, checked) in [("[ ] ", false), ("[x] ", true), ("[X] ", true)] {
                if let Some(text) = rest.strip_prefix(box_) {
                    return Some(ListItem {
                        indent,
                        kind: ListKind::Todo(checked),
                        text: text.to_string(),
                    });
                }
            }
            if matches!(rest.trim_end(), "[ ]" | "[x]" | "[X]") {
                return Some(ListItem {
                    indent,
                    kind: ListKind::Todo(rest.trim_end() != "[ ]"),
                    text: String::new(),
                });
            }
            return Some(ListItem {
                indent,
                kind: ListKind::Bullet,
                text: rest.to_string(),
            });
        }
        if t == marker.trim_end() {
            return Some(ListItem {
                indent,
                kind: ListKind::Bullet,
                text: String::new(),
            });
        }
    }
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    if (1..=9).contains(&digits) {
        let rest = &t[digits..];
        if let Some(text) = rest.strip_prefix(". ").or_else(|| rest.strip_prefix(") ")) {
            return Some(ListItem {
                indent,
                kind: ListKind::Numbered,
                text: text.to_string(),
            });
        }
    }
    None
}

fn fence_open(line: &str) -> Option<(String, &str)> {
    let t = line.trim_start();
    if leading_indent(line) > 3 {
        return None;
    }
    for c in ['`', '~'] {
        let r = t.chars().take_while(|x| *x == c).count();
        if r >= 3 {
            let info = &t[r..];
            if c == '`' && info.contains('`') {
                return None;
            }
            return Some((c.to_string().repeat(r), info.trim()));
        }
    }
    None
}

fn is_divider(t: &str) -> bool {
    let compact: String = t.chars().filter(|c| !c.is_whitespace()).collect();
    compact.len() >= 3
        && ['-', '*', '_']
            .iter()
            .any(|m| compact.chars().all(|c| c == *m))
}

fn heading(t: &str) -> Option<(usize, &str)> {
    let hashes = t.chars().take_while(|c| *c == '#').count();
    if (1..=6).contains(&hashes) {
        let rest = &t[hashes..];
        if rest.is_empty() {
            return Some((hashes.min(3), ""));
        }
        if let Some(text) = rest.strip_prefix(' ') {
            let text = text.trim().trim_end_matches('#').trim_end();
            return Some((hashes.min(3), text));
        }
    }
    None
}

fn image_line(t: &str) -> Option<Value> {
    let rest = t.strip_prefix("![")?;
    let chars: Vec<char> = rest.chars().collect();
    // Reuse the link scanner on "[alt](url)".
    let mut with_bracket = vec!['['];
    with_bracket.extend(chars);
    let (text_end, url_start, url_end) = find_link(&with_bracket, 0)?;
    if url_end + 1 != with_bracket.len() {
        return None;
    }
    let url: String = with_bracket[url_start..url_end].iter().collect();
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return None;
    }
    let alt: String = with_bracket[1..text_end].iter().collect();
    let mut image = Map::new();
    image.insert("type".into(), json!("external"));
    image.insert("external".into(), json!({ "url": url }));
    if !alt.is_empty() {
        image.insert("caption".into(), Value::Array(plain_rich_text(&alt)));
    }
    Some(json!({ "object": "block", "type": "image", "image": Value::Object(image) }))
}

fn starts_block(line: &str) -> bool {
    let t = line.trim();
    t.is_empty()
        || fence_open(line).is_some()
        || is_divider(t)
        || heading(t).is_some()
        || t.starts_with('>')
        || parse_list_item(line).is_some()
}

fn build_list(
    items: &[ListItem],
    pos: &mut usize,
    level_indent: usize,
    depth: usize,
) -> Vec<Value> {
    let mut out = Vec::new();
    while *pos < items.len() {
        let item = &items[*pos];
        if item.indent < level_indent && !out.is_empty() {
            break;
        }
        *pos += 1;
        let mut children = Vec::new();
        if let Some(next) = items.get(*pos)
            && next.indent > item.indent
        {
            if depth < MAX_NESTING {
                children = build_list(items, pos, next.indent, depth + 1);
            } else {
                // Too deep for one request: keep the items, one level up.
                let mut flat = build_list(items, pos, next.indent, depth);
                out.extend(item_blocks(item, Vec::new()));
                out.append(&mut flat);
                continue;
            }
        }
        out.extend(item_blocks(item, children));
    }
    out
}

fn item_blocks(item: &ListItem, children: Vec<Value>) -> Vec<Value> {
    let rich = inline_to_rich_text(&item.text);
    let (ty, extra): (&str, Vec<(&str, Value)>) = match item.kind {
        ListKind::Bullet => ("bulleted_list_item", vec![]),
        ListKind::Numbered => ("numbered_list_item", vec![]),
        ListKind::Todo(checked) => ("to_do", vec![("checked", Value::Bool(checked))]),
    };
    // More than 100 rich text items make several items of the same kind (children on the
    // last), so no text is lost.
    text_blocks(ty, rich, &extra, children)
}

/// Counts blocks including nested children.
pub fn count_blocks(blocks: &[Value]) -> usize {
    blocks
        .iter()
        .map(|b| {
            let ty = b.get("type").and_then(Value::as_str).unwrap_or("");
            1 + count_blocks(children_of(b, ty))
        })
        .sum()
}

/// Converts Markdown to Notion blocks: headings, paragraphs, bulleted / numbered / to-do
/// lists (nested by indentation), quotes, fenced code, dividers, images on their own line,
/// and inline bold, italic, strikethrough, code and links.
pub fn markdown_to_blocks(markdown: &str) -> Result<Vec<Value>, MarkdownError> {
    if markdown.len() > MAX_MARKDOWN_BYTES {
        return Err(MarkdownError::TooLarge {
            bytes: markdown.len(),
            max: MAX_MARKDOWN_BYTES,
        });
    }
    let lines: Vec<&str> = markdown.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim();
        if t.is_empty() {
            i += 1;
            continue;
        }
        if let Some((fence, info)) = fence_open(line) {
            let mut code = Vec::new();
            i += 1;
            while i < lines.len() {
                let l = lines[i];
                let lt = l.trim();
                if lt.starts_with(&fence) && lt.chars().all(|c| fence.starts_with(c)) {
                    i += 1;
                    break;
                }
                code.push(l);
                i += 1;
            }
            let text = code.join("\n");
            let lang = code_language(info);
            blocks.extend(text_blocks(
                "code",
                plain_rich_text(&text),
                &[("language", json!(lang))],
                Vec::new(),
            ));
            continue;
        }
        if is_divider(t) {
            blocks.push(json!({ "object": "block", "type": "divider", "divider": {} }));
            i += 1;
            continue;
        }
        if let Some((level, text)) = heading(t) {
            let ty = format!("heading_{level}");
            blocks.extend(text_blocks(&ty, inline_to_rich_text(text), &[], Vec::new()));
            i += 1;
            continue;
        }
        if t.starts_with('>') {
            let mut quoted = Vec::new();
            while i < lines.len() && lines[i].trim().starts_with('>') {
                let q = lines[i].trim().trim_start_matches('>');
                quoted.push(q.strip_prefix(' ').unwrap_or(q));
                i += 1;
            }
            let text = quoted.join("\n");
            blocks.extend(text_blocks(
                "quote",
                inline_to_rich_text(&text),
                &[],
                Vec::new(),
            ));
            continue;
        }
        if parse_list_item(line).is_some() {
            let mut items: Vec<ListItem> = Vec::new();
            while i < lines.len() {
                let l = lines[i];
                if is_divider(l.trim()) {
                    break;
                }
                if let Some(item) = parse_list_item(l) {
                    items.push(item);
                    i += 1;
                    continue;
                }
                if l.trim().is_empty() {
                    // A blank line continues the list only if another item follows.
                    let next = lines[i + 1..].iter().find(|x| !x.trim().is_empty());
                    match next {
                        Some(n) if parse_list_item(n).is_some() => {
                            i += 1;
                            continue;
                        }
                        _ => break,
                    }
                }
                if leading_indent(l) >= 2
                    && let Some(last) = items.last_mut()
                {
                    // A continuation line of the previous item.
                    last.text.push('\n');
                    last.text.push_str(l.trim());
                    i += 1;
                    continue;
                }
                break;
            }
            let mut pos = 0;
            let base = items.iter().map(|it| it.indent).min().unwrap_or(0);
            blocks.extend(build_list(&items, &mut pos, base, 0));
            continue;
        }
        if let Some(image) = image_line(t) {
            blocks.push(image);
            i += 1;
            continue;
        }
        let mut para = vec![t];
        i += 1;
        while i < lines.len() && !starts_block(lines[i]) {
            para.push(lines[i].trim());
            i += 1;
        }
        let text = para.join("\n");
        blocks.extend(text_blocks(
            "paragraph",
            inline_to_rich_text(&text),
            &[],
            Vec::new(),
        ));
    }
    let count = count_blocks(&blocks);
    if count > MAX_BLOCKS {
        return Err(MarkdownError::TooManyBlocks {
            blocks: count,
            max: MAX_BLOCKS,
        });
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests;

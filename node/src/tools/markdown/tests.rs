use super::*;
use serde_json::json;

fn rt(text: &str) -> Value {
    json!([{ "type": "text", "plain_text": text, "text": { "content": text } }])
}

fn rt_ann(text: &str, ann: Value) -> Value {
    json!({ "type": "text", "plain_text": text, "text": { "content": text }, "annotations": ann })
}

fn block(ty: &str, text: &str) -> Value {
    json!({ "object": "block", "type": ty, ty: { "rich_text": rt(text) } })
}

fn with_children(mut b: Value, children: Vec<Value>) -> Value {
    let ty = b["type"].as_str().unwrap().to_string();
    b[&ty]["children"] = Value::Array(children);
    b
}

// ---------------------------------------------------------------- blocks → Markdown

#[test]
fn annotations_render_as_inline_markdown() {
    let rich = json!([
        rt_ann("bold", json!({"bold": true})),
        { "type": "text", "plain_text": " and ", "text": {"content": " and "} },
        rt_ann("italic", json!({"italic": true})),
        rt_ann(" struck ", json!({"strikethrough": true})),
        rt_ann("x = 1", json!({"code": true})),
        { "type": "text", "plain_text": "site", "text": {"content": "site", "link": {"url": "https://e.x"}}, "href": "https://e.x" },
        rt_ann("all", json!({"bold": true, "italic": true})),
        { "type": "equation", "plain_text": "E=mc^2", "equation": {"expression": "E=mc^2"} },
        { "type": "mention", "plain_text": "@Ada", "href": "https://www.notion.so/u" },
    ]);
    assert_eq!(
        rich_text_to_markdown(&rich),
        "**bold** and *italic* ~~struck~~ `x = 1`[site](https://e.x)***all***$E=mc^2$[@Ada](https://www.notion.so/u)"
    );
    assert_eq!(
        plain_text(&rich),
        "bold and italic struck x = 1siteallE=mc^2@Ada"
    );
}

#[test]
fn code_annotation_with_backtick_uses_double_fence() {
    let rich = json!([rt_ann("a`b", json!({"code": true}))]);
    assert_eq!(rich_text_to_markdown(&rich), "``a`b``");
}

#[test]
fn whitespace_only_annotated_text_is_left_alone() {
    let rich = json!([rt_ann("  ", json!({"bold": true}))]);
    assert_eq!(rich_text_to_markdown(&rich), "  ");
}

#[test]
fn headings_paragraphs_dividers() {
    let blocks = vec![
        block("heading_1", "One"),
        block("heading_2", "Two"),
        block("heading_3", "Three"),
        block("paragraph", "Text"),
        json!({ "type": "divider", "divider": {} }),
        block("paragraph", "After"),
    ];
    assert_eq!(
        blocks_to_markdown(&blocks),
        "# One\n\n## Two\n\n### Three\n\nText\n\n---\n\nAfter"
    );
}

#[test]
fn lists_nest_and_number() {
    let blocks = vec![
        with_children(
            block("bulleted_list_item", "a"),
            vec![with_children(
                block("bulleted_list_item", "a1"),
                vec![block("bulleted_list_item", "a1x")],
            )],
        ),
        block("bulleted_list_item", "b"),
        block("paragraph", "between"),
        block("numbered_list_item", "first"),
        with_children(
            block("numbered_list_item", "second"),
            vec![block("numbered_list_item", "inner")],
        ),
        block("numbered_list_item", "third"),
    ];
    assert_eq!(
        blocks_to_markdown(&blocks),
        "- a\n  - a1\n    - a1x\n- b\n\nbetween\n\n1. first\n2. second\n   1. inner\n3. third"
    );
}

#[test]
fn todos_toggles_quotes_callouts() {
    let mut done = block("to_do", "done");
    done["to_do"]["checked"] = json!(true);
    let mut open = block("to_do", "open");
    open["to_do"]["checked"] = json!(false);
    let toggle = with_children(block("toggle", "More"), vec![block("paragraph", "hidden")]);
    let quote = block("quote", "line one\nline two");
    let mut callout = block("callout", "Note");
    callout["callout"]["icon"] = json!({"type": "emoji", "emoji": "💡"});
    assert_eq!(
        blocks_to_markdown(&[done, open, toggle, quote, callout]),
        "- [x] done\n- [ ] open\n\n<details>\n<summary>More</summary>\n\nhidden\n</details>\n\n> line one\n> line two\n\n> 💡 Note"
    );
}

#[test]
fn code_blocks_keep_language_and_raw_text() {
    let mut code = block("code", "fn main() {\n    **not bold**\n}");
    code["code"]["language"] = json!("rust");
    let mut plain = block("code", "text");
    plain["code"]["language"] = json!("plain text");
    assert_eq!(
        blocks_to_markdown(&[code, plain]),
        "```rust\nfn main() {\n    **not bold**\n}\n```\n\n```\ntext\n```"
    );
}

#[test]
fn pages_databases_media_as_links() {
    let blocks = vec![
        json!({ "id": "11111111-2222-3333-4444-555555555555", "type": "child_page", "child_page": {"title": "Sub"} }),
        json!({ "id": "11111111-2222-3333-4444-666666666666", "type": "child_database", "child_database": {"title": ""} }),
        json!({ "type": "image", "image": {"type": "external", "external": {"url": "https://i.x/a.png"}, "caption": rt("cap")} }),
        json!({ "type": "bookmark", "bookmark": {"url": "https://b.x", "caption": []} }),
        json!({ "type": "file", "file": {"type": "file", "file": {"url": "https://f.x/doc.pdf"}, "name": "doc.pdf"} }),
        json!({ "type": "mystery_block", "mystery_block": {} }),
    ];
    assert_eq!(
        blocks_to_markdown(&blocks),
        "📄 [Sub](https://www.notion.so/11111111222233334444555555555555)\n\n\
         🗃️ [Untitled](https://www.notion.so/11111111222233334444666666666666)\n\n\
         ![cap](https://i.x/a.png)\n\n[https://b.x](https://b.x)\n\n[doc.pdf](https://f.x/doc.pdf)\n\n\
         <!-- unsupported block: mystery_block -->"
    );
}

#[test]
fn tables_render_with_header_row() {
    let row =
        |a: &str, b: &str| json!({ "type": "table_row", "table_row": {"cells": [rt(a), rt(b)]} });
    let table = with_children(
        json!({ "type": "table", "table": {"table_width": 2, "has_column_header": true} }),
        vec![row("k", "v"), row("a|b", "1")],
    );
    assert_eq!(
        blocks_to_markdown(&[table]),
        "| k | v |\n| --- | --- |\n| a\\|b | 1 |"
    );
}

// ---------------------------------------------------------------- property values

#[test]
fn property_values_as_text() {
    let cases = [
        (json!({"type": "title", "title": rt("Hello")}), "Hello"),
        (
            json!({"type": "rich_text", "rich_text": rt("note")}),
            "note",
        ),
        (json!({"type": "number", "number": 4.5}), "4.5"),
        (json!({"type": "number", "number": null}), ""),
        (
            json!({"type": "select", "select": {"name": "High"}}),
            "High",
        ),
        (json!({"type": "select", "select": null}), ""),
        (
            json!({"type": "multi_select", "multi_select": [{"name": "a"}, {"name": "b"}]}),
            "a, b",
        ),
        (
            json!({"type": "status", "status": {"name": "Done"}}),
            "Done",
        ),
        (
            json!({"type": "date", "date": {"start": "2025-01-01"}}),
            "2025-01-01",
        ),
        (
            json!({"type": "date", "date": {"start": "2025-01-01", "end": "2025-01-03"}}),
            "2025-01-01 → 2025-01-03",
        ),
        (json!({"type": "checkbox", "checkbox": true}), "Yes"),
        (json!({"type": "checkbox", "checkbox": false}), "No"),
        (
            json!({"type": "people", "people": [{"id": "u1", "name": "Ada"}, {"id": "u2"}]}),
            "Ada, u2",
        ),
        (json!({"type": "url", "url": "https://x.y"}), "https://x.y"),
        (json!({"type": "email", "email": "a@b.c"}), "a@b.c"),
        (
            json!({"type": "phone_number", "phone_number": "+1 555"}),
            "+1 555",
        ),
        (
            json!({"type": "relation", "relation": [{"id": "r1"}, {"id": "r2"}]}),
            "r1, r2",
        ),
        (
            json!({"type": "formula", "formula": {"type": "number", "number": 3}}),
            "3",
        ),
        (
            json!({"type": "formula", "formula": {"type": "string", "string": "s"}}),
            "s",
        ),
        (
            json!({"type": "formula", "formula": {"type": "boolean", "boolean": true}}),
            "true",
        ),
        (
            json!({"type": "formula", "formula": {"type": "date", "date": {"start": "2025-02-02"}}}),
            "2025-02-02",
        ),
        (
            json!({"type": "created_time", "created_time": "2025-01-01T00:00:00.000Z"}),
            "2025-01-01T00:00:00.000Z",
        ),
        (
            json!({"type": "last_edited_time", "last_edited_time": "2025-01-02T00:00:00.000Z"}),
            "2025-01-02T00:00:00.000Z",
        ),
        (
            json!({"type": "created_by", "created_by": {"id": "u9", "name": "Bot"}}),
            "Bot",
        ),
        (
            json!({"type": "unique_id", "unique_id": {"prefix": "T", "number": 12}}),
            "T-12",
        ),
        (
            json!({"type": "rollup", "rollup": {"type": "array", "array": [{"type": "number", "number": 1}, {"type": "number", "number": 2}]}}),
            "1, 2",
        ),
        (
            json!({"type": "files", "files": [{"name": "a.pdf"}]}),
            "a.pdf",
        ),
        (json!({"type": "button", "button": {}}), ""),
    ];
    for (prop, want) in cases {
        assert_eq!(property_to_text(&prop), want, "{prop}");
    }
}

#[test]
fn titles_of_pages_and_data_sources() {
    let page = json!({"properties": {"Status": {"type": "status", "status": {"name": "x"}}, "Name": {"type": "title", "title": rt("Row")}}});
    assert_eq!(object_title(&page), "Row");
    let ds = json!({"title": rt("Tasks"), "properties": {}});
    assert_eq!(object_title(&ds), "Tasks");
    assert_eq!(object_title(&json!({})), "");
}

// ---------------------------------------------------------------- Markdown → blocks

fn types(blocks: &[Value]) -> Vec<&str> {
    blocks.iter().map(|b| b["type"].as_str().unwrap()).collect()
}

fn text_of(b: &Value) -> String {
    let ty = b["type"].as_str().unwrap();
    plain_text(&b[ty]["rich_text"])
}

#[test]
fn block_kinds_from_markdown() {
    let md = "# Title\n## Sub\n### Third\n#### Fourth\n\nA paragraph\nwith two lines.\n\n---\n\n> quoted\n> more\n\n```rs\nlet x = 1;\n\nlet y = 2;\n```\n\n- [ ] open\n- [x] done\n\n![alt](https://i.x/p.png)\n";
    let blocks = markdown_to_blocks(md).unwrap();
    assert_eq!(
        types(&blocks),
        [
            "heading_1",
            "heading_2",
            "heading_3",
            "heading_3",
            "paragraph",
            "divider",
            "quote",
            "code",
            "to_do",
            "to_do",
            "image"
        ]
    );
    assert_eq!(text_of(&blocks[0]), "Title");
    assert_eq!(text_of(&blocks[3]), "Fourth");
    assert_eq!(text_of(&blocks[4]), "A paragraph\nwith two lines.");
    assert_eq!(text_of(&blocks[6]), "quoted\nmore");
    assert_eq!(text_of(&blocks[7]), "let x = 1;\n\nlet y = 2;");
    assert_eq!(blocks[7]["code"]["language"], "rust");
    assert_eq!(blocks[8]["to_do"]["checked"], false);
    assert_eq!(blocks[9]["to_do"]["checked"], true);
    assert_eq!(blocks[10]["image"]["external"]["url"], "https://i.x/p.png");
    for b in &blocks {
        assert_eq!(b["object"], "block");
    }
}

#[test]
fn code_fence_content_is_not_parsed() {
    let blocks = markdown_to_blocks("~~~python\n# not a heading\n- not a list\n~~~").unwrap();
    assert_eq!(types(&blocks), ["code"]);
    assert_eq!(blocks[0]["code"]["language"], "python");
    assert_eq!(text_of(&blocks[0]), "# not a heading\n- not a list");
    // An unclosed fence runs to the end.
    let blocks = markdown_to_blocks("```\nopen").unwrap();
    assert_eq!(text_of(&blocks[0]), "open");
    assert_eq!(blocks[0]["code"]["language"], "plain text");
}

#[test]
fn code_languages_map_to_notions_names() {
    assert_eq!(code_language("rust"), "rust");
    assert_eq!(code_language("ts"), "typescript");
    assert_eq!(code_language("JS"), "javascript");
    assert_eq!(code_language("sh"), "shell");
    assert_eq!(code_language("c++"), "c++");
    assert_eq!(code_language("brainfuck"), "plain text");
    assert_eq!(code_language(""), "plain text");
    assert_eq!(code_language("python title=x.py"), "python");
}

#[test]
fn lists_nest_by_indentation() {
    let md = "- a\n  - a1\n    - a1x\n  - a2\n- b\n\n1. one\n2. two\n   1. two.one\n";
    let blocks = markdown_to_blocks(md).unwrap();
    assert_eq!(
        types(&blocks),
        [
            "bulleted_list_item",
            "bulleted_list_item",
            "numbered_list_item",
            "numbered_list_item"
        ]
    );
    let a_kids = blocks[0]["bulleted_list_item"]["children"]
        .as_array()
        .unwrap();
    assert_eq!(a_kids.len(), 2);
    assert_eq!(text_of(&a_kids[0]), "a1");
    assert_eq!(text_of(&a_kids[1]), "a2");
    let a1_kids = a_kids[0]["bulleted_list_item"]["children"]
        .as_array()
        .unwrap();
    assert_eq!(text_of(&a1_kids[0]), "a1x");
    assert!(blocks[1]["bulleted_list_item"].get("children").is_none());
    let two_kids = blocks[3]["numbered_list_item"]["children"]
        .as_array()
        .unwrap();
    assert_eq!(text_of(&two_kids[0]), "two.one");
}

#[test]
fn nesting_deeper_than_notion_allows_is_flattened_without_loss() {
    let md = "- l0\n  - l1\n    - l2\n      - l3\n        - l4\n";
    let blocks = markdown_to_blocks(md).unwrap();
    assert_eq!(count_blocks(&blocks), 5);
    let l1 = &blocks[0]["bulleted_list_item"]["children"][0];
    let l2s = l1["bulleted_list_item"]["children"].as_array().unwrap();
    let texts: Vec<String> = l2s.iter().map(text_of).collect();
    assert_eq!(texts, ["l2", "l3", "l4"]);
    for b in l2s {
        assert!(b["bulleted_list_item"].get("children").is_none());
    }
}

#[test]
fn lists_continue_across_blank_lines_and_stop_at_paragraphs() {
    let blocks = markdown_to_blocks("- a\n\n- b\n\nafter\n- c\n  continued").unwrap();
    assert_eq!(
        types(&blocks),
        [
            "bulleted_list_item",
            "bulleted_list_item",
            "paragraph",
            "bulleted_list_item"
        ]
    );
    assert_eq!(text_of(&blocks[3]), "c\ncontinued");
}

fn items(text: &str) -> Vec<Value> {
    inline_to_rich_text(text)
}

#[test]
fn inline_formatting() {
    let r = items("plain **bold** *it* _it2_ ~~gone~~ `co*de*` [link](https://x.y/a_(b)) end");
    let got: Vec<(String, Value, Value)> = r
        .iter()
        .map(|i| {
            (
                i["text"]["content"].as_str().unwrap().to_string(),
                i.get("annotations").cloned().unwrap_or(Value::Null),
                i["text"].get("link").cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    let want = vec![
        ("plain ", Value::Null, Value::Null),
        ("bold", json!({"bold": true}), Value::Null),
        (" ", Value::Null, Value::Null),
        ("it", json!({"italic": true}), Value::Null),
        (" ", Value::Null, Value::Null),
        ("it2", json!({"italic": true}), Value::Null),
        (" ", Value::Null, Value::Null),
        ("gone", json!({"strikethrough": true}), Value::Null),
        (" ", Value::Null, Value::Null),
        ("co*de*", json!({"code": true}), Value::Null),
        (" ", Value::Null, Value::Null),
        ("link", Value::Null, json!({"url": "https://x.y/a_(b)"})),
        (" end", Value::Null, Value::Null),
    ];
    let want: Vec<(String, Value, Value)> = want
        .into_iter()
        .map(|(a, b, c)| (a.to_string(), b, c))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn nested_emphasis_and_formatted_links() {
    let r = items("**bold *both* bold** [**strong link**](https://s.x)");
    assert_eq!(r[0]["text"]["content"], "bold ");
    assert_eq!(r[0]["annotations"], json!({"bold": true}));
    assert_eq!(r[1]["text"]["content"], "both");
    assert_eq!(r[1]["annotations"], json!({"bold": true, "italic": true}));
    assert_eq!(r[2]["text"]["content"], " bold");
    assert_eq!(r[4]["text"]["content"], "strong link");
    assert_eq!(r[4]["annotations"], json!({"bold": true}));
    assert_eq!(r[4]["text"]["link"]["url"], "https://s.x");
    let r = items("***both***");
    assert_eq!(r[0]["annotations"], json!({"bold": true, "italic": true}));
    assert_eq!(r[0]["text"]["content"], "both");
}

#[test]
fn unmatched_markers_and_escapes_stay_literal() {
    for (md, want) in [
        ("2 * 3 = 6", "2 * 3 = 6"),
        ("snake_case_name", "snake_case_name"),
        ("**unclosed", "**unclosed"),
        ("a ~ b", "a ~ b"),
        ("\\*not italic\\*", "*not italic*"),
        ("[text](javascript:alert(1))", "[text](javascript:alert(1))"),
        ("[no url]", "[no url]"),
        ("`open code", "`open code"),
    ] {
        let r = items(md);
        assert_eq!(r.len(), 1, "{md}: {r:?}");
        assert_eq!(r[0]["text"]["content"], want, "{md}");
        assert!(r[0].get("annotations").is_none(), "{md}");
        assert!(r[0]["text"].get("link").is_none(), "{md}");
    }
}

#[test]
fn rich_text_items_are_split_at_2000_units() {
    let long = "é".repeat(4500);
    let r = items(&long);
    assert_eq!(r.len(), 3);
    let lens: Vec<usize> = r
        .iter()
        .map(|i| i["text"]["content"].as_str().unwrap().chars().count())
        .collect();
    assert_eq!(lens, [2000, 2000, 500]);
    // Characters outside the BMP count twice and are never cut in half.
    let emoji = "😀".repeat(1001);
    let r = plain_rich_text(&emoji);
    assert_eq!(r.len(), 2);
    assert_eq!(
        r[0]["text"]["content"].as_str().unwrap().chars().count(),
        1000
    );
    assert_eq!(r[1]["text"]["content"].as_str().unwrap().chars().count(), 1);
}

#[test]
fn more_than_100_rich_text_items_make_several_blocks() {
    // 101 links in one paragraph: 201 items (links and separators).
    let md: Vec<String> = (0..101)
        .map(|i| format!("[l{i}](https://x.y/{i})"))
        .collect();
    let blocks = markdown_to_blocks(&md.join(" ")).unwrap();
    assert!(blocks.len() >= 3, "{}", blocks.len());
    let mut total = 0;
    for b in &blocks {
        assert_eq!(b["type"], "paragraph");
        let n = b["paragraph"]["rich_text"].as_array().unwrap().len();
        assert!(n <= MAX_RICH_TEXT_ITEMS);
        total += n;
    }
    assert_eq!(total, 201);
}

#[test]
fn size_and_block_limits() {
    let big = "a".repeat(MAX_MARKDOWN_BYTES + 1);
    assert!(matches!(
        markdown_to_blocks(&big),
        Err(MarkdownError::TooLarge { .. })
    ));
    let many = "x\n\n".repeat(MAX_BLOCKS + 1);
    assert!(matches!(
        markdown_to_blocks(&many),
        Err(MarkdownError::TooManyBlocks { blocks, max: MAX_BLOCKS }) if blocks == MAX_BLOCKS + 1
    ));
    assert_eq!(
        markdown_to_blocks("x\n\n".repeat(MAX_BLOCKS).as_str())
            .unwrap()
            .len(),
        MAX_BLOCKS
    );
    assert!(markdown_to_blocks("").unwrap().is_empty());
    assert!(markdown_to_blocks("\n  \n\r\n").unwrap().is_empty());
}

#[test]
fn markdown_round_trips_through_blocks() {
    let md = "# Plan\n\nSome **bold** and *italic* and `code` with a [link](https://x.y).\n\n\
              - one\n  - one.a\n- two\n\n1. first\n2. second\n\n- [ ] task\n- [x] done\n\n\
              > wise words\n\n```rust\nfn main() {}\n```\n\n---\n\n### End";
    let blocks = markdown_to_blocks(md).unwrap();
    assert_eq!(blocks_to_markdown(&blocks), md);
}

// ---------------------------------------------------------------- seeded fuzzing

fn check_limits(blocks: &[Value], depth: usize) {
    assert!(depth <= MAX_NESTING, "nested {depth} levels");
    for b in blocks {
        let ty = b["type"].as_str().unwrap();
        if let Some(rich) = b[ty].get("rich_text") {
            let items = rich.as_array().unwrap();
            assert!(items.len() <= MAX_RICH_TEXT_ITEMS);
            for i in items {
                let content = i["text"]["content"].as_str().unwrap();
                assert!(!content.is_empty());
                assert!(content.encode_utf16().count() <= MAX_RICH_TEXT_UNITS);
            }
        }
        if let Some(kids) = b[ty].get("children") {
            check_limits(kids.as_array().unwrap(), depth + 1);
        }
    }
}

fn letters_in_blocks(blocks: &[Value]) -> usize {
    blocks
        .iter()
        .map(|b| {
            let ty = b["type"].as_str().unwrap();
            let caption = plain_text(&b[ty]["caption"]);
            let own = (plain_text(&b[ty]["rich_text"]) + &caption)
                .chars()
                .filter(|c| matches!(c, 'a' | 'b'))
                .count();
            let kids = b[ty]
                .get("children")
                .and_then(Value::as_array)
                .map_or(0, |k| letters_in_blocks(k));
            own + kids
        })
        .sum()
}

#[test]
fn random_markdown_never_panics_keeps_limits_and_loses_no_text() {
    use rand::{Rng, SeedableRng};
    const ALPHABET: &[&str] = &[
        "a",
        "b",
        "ab",
        " ",
        " ",
        "\n",
        "\n\n",
        "*",
        "**",
        "_",
        "~~",
        "`",
        "``",
        "[",
        "]",
        "#",
        "# ",
        "- ",
        "  - ",
        "1. ",
        "> ",
        "\\",
        "---",
        "```",
        "- [ ] ",
        "\t",
        "é",
        "😀",
        "(",
        ")",
        "](https://x.y)",
        "![",
        "](javascript:x)",
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed);
    for round in 0..5000 {
        let len = rng.random_range(0..120);
        let md: String = (0..len)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
            .collect();
        let blocks =
            markdown_to_blocks(&md).unwrap_or_else(|e| panic!("round {round} {md:?}: {e}"));
        check_limits(&blocks, 0);
        let rendered = blocks_to_markdown(&blocks);
        // Outside code fences (whose info string is not text), every letter arrives.
        if !md.contains("```") && !md.contains("~~~") {
            let want = md.chars().filter(|c| matches!(c, 'a' | 'b')).count();
            assert_eq!(letters_in_blocks(&blocks), want, "round {round}: {md:?}");
            let again = markdown_to_blocks(&rendered).unwrap();
            assert_eq!(
                letters_in_blocks(&again),
                want,
                "round {round}: {md:?} -> {rendered:?}"
            );
        }
    }
}

//! Notion ids: 32 hexadecimal digits, written with or without dashes (8-4-4-4-12), or
//! found inside a `notion.so` / `notion.site` URL. Ids are normalised to the lowercase
//! dashed form before they go into a request path.

/// The longest id argument accepted (a URL with a long title and query string).
pub const MAX_ID_ARGUMENT_LEN: usize = 2048;

/// Parses a bare id (32 hex digits, dashed or not). Returns the dashed lowercase form.
pub fn parse_id(input: &str) -> Option<String> {
    let s = input.trim();
    let hex: String = if s.len() == 36 {
        let bytes = s.as_bytes();
        for pos in [8, 13, 18, 23] {
            if bytes[pos] != b'-' {
                return None;
            }
        }
        s.chars().filter(|c| *c != '-').collect()
    } else {
        s.to_string()
    };
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(dashed(&hex.to_ascii_lowercase()))
}

fn dashed(hex32: &str) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        &hex32[0..8],
        &hex32[8..12],
        &hex32[12..16],
        &hex32[16..20],
        &hex32[20..32]
    )
}

/// Parses an id, or a `notion.so` / `notion.site` URL that contains one: a peek parameter
/// `?p=<id>` wins, otherwise the id that ends the path's last segment (`Title-<id>`).
pub fn parse_id_or_url(input: &str) -> Option<String> {
    let s = input.trim();
    if s.len() > MAX_ID_ARGUMENT_LEN {
        return None;
    }
    if let Some(id) = parse_id(s) {
        return Some(id);
    }
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))?;
    let (authority, path_and_more) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let host = authority.rsplit('@').next()?.split(':').next()?;
    let host = host.to_ascii_lowercase();
    let notion_host = ["notion.so", "notion.site"]
        .iter()
        .any(|d| host == *d || host.ends_with(&format!(".{d}")));
    if !notion_host {
        return None;
    }
    let without_fragment = path_and_more.split('#').next().unwrap_or("");
    let (path, query) = match without_fragment.split_once('?') {
        Some((p, q)) => (p, q),
        None => (without_fragment, ""),
    };
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("p=")
            && let Some(id) = parse_id(v)
        {
            return Some(id);
        }
    }
    let segment = path.trim_end_matches('/').rsplit('/').next()?;
    if let Some(id) = parse_id(segment) {
        return Some(id);
    }
    // `Title-With-Dashes-<32 hex>`: the id is the last 32 characters.
    if segment.len() > 32 && segment.is_char_boundary(segment.len() - 32) {
        let tail = &segment[segment.len() - 32..];
        let before = &segment[..segment.len() - 32];
        if before.ends_with('-') {
            return parse_id(tail);
        }
    }
    None
}

/// The `notion.so` URL of an object, for links in rendered Markdown.
pub fn notion_url(id: &str) -> String {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    format!("https://www.notion.so/{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DASHED: &str = "1a2b3c4d-5e6f-4a8b-9c0d-112233445566";
    const PLAIN: &str = "1a2b3c4d5e6f4a8b9c0d112233445566";

    #[test]
    fn bare_ids_dashed_or_not() {
        assert_eq!(parse_id(PLAIN).as_deref(), Some(DASHED));
        assert_eq!(parse_id(DASHED).as_deref(), Some(DASHED));
        assert_eq!(
            parse_id(&PLAIN.to_uppercase()).as_deref(),
            Some(DASHED),
            "uppercase is normalised"
        );
        assert_eq!(parse_id(&format!("  {PLAIN} ")).as_deref(), Some(DASHED));
    }

    #[test]
    fn bad_ids_are_rejected() {
        for bad in [
            "",
            "abc",
            &PLAIN[..31],
            &format!("{PLAIN}0"),
            "1a2b3c4d5e6f4a8b9c0d11223344556g",
            "1a2b3c4d-5e6f4a8b-9c0d-1122-33445566",
            "../../v1/users/me00000000000000000",
            "1a2b3c4d-5e6f-4a8b-9c0d-11223344556é",
        ] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
            assert_eq!(parse_id_or_url(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn urls_with_titles_paths_and_queries() {
        let cases = [
            format!("https://www.notion.so/My-Page-{PLAIN}"),
            format!("https://www.notion.so/acme/My-Page-{PLAIN}?pvs=4"),
            format!("https://notion.so/{PLAIN}"),
            format!("https://acme.notion.site/Public-Page-{PLAIN}#heading"),
            format!("https://www.notion.so/acme/{DASHED}"),
            format!("https://www.notion.so/acme/ffffffffffffffffffffffffffffffff?v=0&p={PLAIN}"),
            format!("http://www.notion.so/{PLAIN}/"),
        ];
        for url in &cases {
            assert_eq!(parse_id_or_url(url).as_deref(), Some(DASHED), "{url}");
        }
    }

    #[test]
    fn other_hosts_and_shapes_are_rejected() {
        for bad in [
            format!("https://evil.example/{PLAIN}"),
            format!("https://notion.so.evil.example/{PLAIN}"),
            format!("ftp://www.notion.so/{PLAIN}"),
            "https://www.notion.so/acme/Just-A-Title".to_string(),
            format!("https://www.notion.so/acme/X{PLAIN}"),
            format!("https://www.notion.so/{}", "a".repeat(MAX_ID_ARGUMENT_LEN)),
        ] {
            assert_eq!(parse_id_or_url(&bad), None, "{bad}");
        }
    }

    #[test]
    fn urls_for_links() {
        assert_eq!(notion_url(DASHED), format!("https://www.notion.so/{PLAIN}"));
    }
}

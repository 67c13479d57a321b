//! `quire ctl tokens issue` (an opaque `qk_` token, or with `--jwt` a signed JWT of the
//! built-in issuer), `quire ctl keys jwt rotate|list|retire` (the issuer's signing keys),
//! `quire ctl keys rotate|status` (the master key ring) and `quire ctl tokens revoke-jwt` (a
//! JWT's id).

use anyhow::bail;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::{Client, View, seg};

/// `quire ctl keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// The built-in JWT issuer's signing keys.
    Jwt {
        #[command(subcommand)]
        command: JwtKeysCommand,
    },
    /// Reseal every secret (Notion tokens, JWT private keys, the key check) that a previous
    /// master key sealed under the current master key of the node it asks, in batches, online.
    /// Run it once every node runs with the new key as `master_key_file`.
    Rotate,
    /// The current master key's id, and how many secrets each key still seals; says which
    /// previous keys seal nothing and can be dropped from `previous_master_key_files`.
    Status,
}

/// `quire ctl keys jwt ...`
#[derive(Debug, Subcommand)]
pub enum JwtKeysCommand {
    /// Every signing key: which one signs, which are retired, until when they validate.
    List,
    /// Add a new signing key and make it the one that signs; the previous one keeps
    /// validating its tokens for the overlap.
    Rotate {
        /// EdDSA (default) or ES256.
        #[arg(long, default_value = "EdDSA")]
        alg: String,
        /// How long tokens signed by the previous key stay valid (e.g. 1h, 30m; default: the
        /// longest token lifetime, security.jwt_max_ttl_secs).
        #[arg(long)]
        overlap: Option<String>,
    },
    /// Retire a key that no longer signs: its tokens are refused after the overlap.
    Retire {
        /// Key id (from `keys jwt list`).
        kid: String,
        /// How long its tokens stay valid (e.g. 0s, 1h; default security.jwt_max_ttl_secs).
        #[arg(long)]
        overlap: Option<String>,
    },
}

/// A duration such as `90`, `45s`, `30m`, `1h` or `2d`, in seconds.
pub fn parse_duration_secs(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| anyhow::anyhow!("{text:?} is not a duration like 90s, 30m, 1h or 2d"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("{text:?}: the unit must be s, m, h or d"),
    };
    n.checked_mul(factor)
        .ok_or_else(|| anyhow::anyhow!("{text:?} is too long"))
}

/// What `tokens issue` was asked.
pub struct IssueOpts {
    pub tenant: Option<String>,
    pub principal: String,
    pub workspace: String,
    pub scopes: Vec<String>,
    pub ttl_secs: Option<u64>,
    pub ttl: Option<String>,
    pub jwt: bool,
}

/// `tokens issue`: `--principal` may be `tenant/principal` instead of `--tenant` + id.
pub async fn issue(c: &Client, o: IssueOpts) -> anyhow::Result<(Value, View)> {
    let (tenant, principal) = match (o.tenant, o.principal.split_once('/')) {
        (Some(t), None) => (t, o.principal.clone()),
        (None, Some((t, p))) => (t.to_owned(), p.to_owned()),
        (Some(t), Some((pt, p))) if t == pt => (t, p.to_owned()),
        (Some(_), Some(_)) => bail!("--tenant and the tenant in --principal T/P differ"),
        (None, None) => bail!("name the tenant: --principal TENANT/PRINCIPAL or --tenant"),
    };
    let ttl_secs = match (o.ttl_secs, o.ttl) {
        (Some(s), None) => Some(s),
        (None, Some(text)) => Some(parse_duration_secs(&text)?),
        (None, None) => None,
        (Some(_), Some(_)) => bail!("give --ttl or --ttl-secs, not both"),
    };
    let mut body = json!({"principal": principal, "workspace": o.workspace});
    if !o.scopes.is_empty() {
        body["scopes"] = o.scopes.into();
    }
    if let Some(ttl) = ttl_secs {
        body["ttl_secs"] = ttl.into();
    }
    let (path, what) = if o.jwt {
        (format!("/tenants/{}/jwt", seg(&tenant)), "issued JWT")
    } else {
        (format!("/tenants/{}/tokens", seg(&tenant)), "issued token")
    };
    let mut v = c.call(Method::POST, &path, Some(body)).await?;
    if o.jwt && v.get("token_id").is_none() {
        v["token_id"] = v["jti"].clone();
    }
    Ok((v, View::Secret(what)))
}

/// `tokens revoke-jwt`: revokes the JWT given (or read from standard input with `-`).
pub async fn revoke(c: &Client, token: String) -> anyhow::Result<(Value, View)> {
    let token = if token == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text)?;
        text.trim().to_owned()
    } else {
        token
    };
    let v = c
        .call(
            Method::POST,
            "/jwt/revocations",
            Some(json!({"token": token})),
        )
        .await?;
    let msg = format!(
        "revoked JWT {} of tenant {} (remembered until it expires)",
        v["jti"].as_str().unwrap_or("-"),
        v["tenant"].as_str().unwrap_or("-")
    );
    Ok((v, View::Message(msg)))
}

/// `keys rotate`: one reseal batch per request until nothing is left, progress on stderr.
async fn rotate_master_key(c: &Client) -> anyhow::Result<(Value, View)> {
    let mut total: Option<u64> = None;
    let mut resealed = 0u64;
    let mut skipped = 0u64;
    let mut idle = 0;
    loop {
        let v = c
            .call(Method::POST, "/keys/rotate", Some(json!({})))
            .await?;
        let now = v["resealed"].as_u64().unwrap_or(0);
        let remaining = v["remaining"].as_u64().unwrap_or(0);
        let total = *total.get_or_insert(v["pending_before"].as_u64().unwrap_or(0));
        resealed += now;
        skipped += v["skipped"].as_u64().unwrap_or(0);
        eprintln!("resealed {resealed} of {total}");
        if remaining == 0 {
            let msg = format!(
                "every secret is sealed under master key {}; resealed {resealed}{}. Check with \
                 `quire ctl keys status`",
                v["current_key"].as_str().unwrap_or("-"),
                if skipped > 0 {
                    format!(" ({skipped} changed meanwhile and were left as they were)")
                } else {
                    String::new()
                }
            );
            return Ok((v, View::Message(msg)));
        }
        // A batch that reseals nothing twice in a row means something keeps sealing under
        // another key (a node still running with the old key as its current key).
        idle = if now == 0 { idle + 1 } else { 0 };
        if idle >= 2 {
            bail!(
                "{remaining} secrets are still not under master key {} and the last batches \
                 resealed none: is every node running with the new key as master_key_file?",
                v["current_key"].as_str().unwrap_or("-")
            );
        }
    }
}

/// The text of `keys status`.
fn master_key_status(v: &Value) -> String {
    let mut out = format!(
        "current master key: {}\n",
        v["current_key"].as_str().unwrap_or("-")
    );
    for k in v["keys"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<16}  {:<24}  seals {}\n",
            k["key_id"].as_str().unwrap_or("-"),
            k["role"].as_str().unwrap_or("-"),
            k["secrets"].as_u64().unwrap_or(0)
        ));
    }
    let drop: Vec<&str> = v["safe_to_drop"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if drop.is_empty() {
        let n = v["not_current"].as_u64().unwrap_or(0);
        if n > 0 {
            out.push_str(&format!(
                "{n} secrets are not under the current key: run `quire ctl keys rotate`"
            ));
        } else {
            out.push_str("every secret is sealed under the current key");
        }
    } else {
        out.push_str(&format!(
            "safe to drop from previous_master_key_files (they seal nothing): {}",
            drop.join(", ")
        ));
    }
    out
}

const KEY_COLUMNS: &[(&str, &str)] = &[
    ("KID", "kid"),
    ("ALG", "alg"),
    ("CURRENT", "current"),
    ("CREATED", "created_at_ms"),
    ("RETIRED", "retired_at_ms"),
    ("NOT AFTER", "not_after_ms"),
    ("VALIDATES", "validates"),
];

/// `keys ...`
pub async fn keys(c: &Client, command: KeysCommand) -> anyhow::Result<(Value, View)> {
    let command = match command {
        KeysCommand::Jwt { command } => command,
        KeysCommand::Rotate => return rotate_master_key(c).await,
        KeysCommand::Status => {
            let v = c.call(Method::GET, "/keys", None).await?;
            let msg = master_key_status(&v);
            return Ok((v, View::Message(msg)));
        }
    };
    Ok(match command {
        JwtKeysCommand::List => {
            let v = c.call(Method::GET, "/jwt/keys", None).await?;
            (
                v,
                View::Table {
                    list_key: "keys",
                    columns: KEY_COLUMNS,
                },
            )
        }
        JwtKeysCommand::Rotate { alg, overlap } => {
            let mut body = json!({"alg": alg});
            if let Some(o) = overlap {
                body["overlap_secs"] = parse_duration_secs(&o)?.into();
            }
            let v = c.call(Method::POST, "/jwt/keys/rotate", Some(body)).await?;
            let msg = match v["previous"].as_str() {
                Some(prev) => format!(
                    "signing with {} now; {prev} validates its tokens until {}",
                    v["kid"].as_str().unwrap_or("-"),
                    v["previous_not_after_ms"]
                        .as_u64()
                        .map_or_else(|| "-".to_owned(), super::table::utc)
                ),
                None => format!("signing with {} now", v["kid"].as_str().unwrap_or("-")),
            };
            (v, View::Message(msg))
        }
        JwtKeysCommand::Retire { kid, overlap } => {
            let mut body = json!({});
            if let Some(o) = overlap {
                body["overlap_secs"] = parse_duration_secs(&o)?.into();
            }
            let v = c
                .call(
                    Method::POST,
                    &format!("/jwt/keys/{}/retire", seg(&kid)),
                    Some(body),
                )
                .await?;
            let msg = format!(
                "retired {kid}; its tokens are refused from {}",
                v["not_after_ms"]
                    .as_u64()
                    .map_or_else(|| "-".to_owned(), super::table::utc)
            );
            (v, View::Message(msg))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_secs("90").unwrap(), 90);
        assert_eq!(parse_duration_secs("45s").unwrap(), 45);
        assert_eq!(parse_duration_secs("30m").unwrap(), 1_800);
        assert_eq!(parse_duration_secs("1h").unwrap(), 3_600);
        assert_eq!(parse_duration_secs("2d").unwrap(), 172_800);
        assert!(parse_duration_secs("1w").is_err());
        assert!(parse_duration_secs("h").is_err());
        assert!(parse_duration_secs("99999999999999999999d").is_err());
    }
}

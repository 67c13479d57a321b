//! Criterion micro-benchmarks of the work every tool call does on its way through a node:
//! the authorization decision, bearer-token validation (built-in JWTs and opaque API tokens),
//! audit hashing and chain verification, the shard lookup, and Markdown conversion.
//!
//! Inputs are built through the public APIs: commands applied with `apply_at` to one control
//! state of 100 tenants × 10 principals (several role bindings each, a restriction per
//! tenant, an API token per principal, a shard map placed on three nodes), tokens issued by
//! the built-in issuer, audit records appended with `AppendAudit`. Every measured call's
//! answer is checked once before it is timed.
//!
//! `cargo bench -p quire-bench --bench hot_paths -- --warm-up-time 1 --measurement-time 3`

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use quire_node::config::Config;
use quire_node::jwt::{
    IssueRequest, JwtSettings, add_key_command, generate_key, issue, validate_builtin,
};
use quire_node::tools::markdown::{blocks_to_markdown, markdown_to_blocks};
use quire_raft::audit::{AuditEvent, GENESIS_HASH, Severity, record_hash, verify_chain};
use quire_raft::jwt_keys::JwtAlg;
use quire_raft::placement::{
    Liveness, NodeLabels, PlanConfig, ShardOwner, occupied_shards, plan, shard_index, shard_of,
    tenant_key,
};
use quire_raft::seal::integration_aad;
use quire_raft::{
    ApiToken, Budget, Command, IntegrationId, MasterKey, Permission, PrincipalId, Role, RoleScope,
    State, Subject, TenantId, TokenId, WorkspaceId, apply_at, authorize, hash_api_token,
};

const TENANTS: usize = 100;
const PRINCIPALS: usize = 10;
const WORKSPACES: usize = 4;
const NODES: u64 = 3;
/// The audit records `verify_chain` walks.
const CHAIN_RECORDS: usize = 1_000;
/// When the state's commands were stamped, and when decisions are taken.
const NOW_MS: u64 = 1_800_000_000_000;

fn tenant(i: usize) -> TenantId {
    TenantId::new(format!("t{i:03}")).expect("tenant id")
}
fn workspace(i: usize) -> WorkspaceId {
    WorkspaceId::new(format!("w{i}")).expect("workspace id")
}
fn principal(i: usize) -> PrincipalId {
    PrincipalId::new(format!("p{i}")).expect("principal id")
}
fn subject(t: usize, p: usize) -> Subject {
    format!("t{t:03}/p{p}").parse().expect("subject")
}
fn ws_scope(t: usize, w: usize) -> RoleScope {
    RoleScope::Workspace {
        tenant: tenant(t),
        workspace: workspace(w),
    }
}
fn api_secret(t: usize, p: usize) -> String {
    format!("qk_t{t:03}_p{p}_0123456789abcdef")
}

/// A control state built by applying commands at consecutive log indexes.
struct Builder {
    state: State,
    index: u64,
}

impl Builder {
    fn apply(&mut self, cmd: Command) {
        self.index += 1;
        if let Err(e) = apply_at(&mut self.state, self.index, &cmd) {
            panic!("{} rejected: {e}", cmd.kind());
        }
    }
}

/// The benchmark state and what the benches need from it.
struct Fixture {
    state: State,
    settings: JwtSettings,
    eddsa_token: String,
    es256_token: String,
}

/// 100 tenants, each with an integration, 4 workspaces and 10 principals; principal `pJ` is a
/// member of workspace `J % 4`, a standard user bound at `(J + 1) % 4`, `p0` manages `w0`,
/// `p1` is the tenant's admin, and `p9` may not write anywhere in the tenant. One API token
/// per principal, the shard map on three nodes, two signing keys (EdDSA, then ES256), and
/// 1,000 tool-call records in `t000`'s audit chain.
fn fixture() -> Fixture {
    let master = MasterKey::from_bytes([7; 32]);
    let mut rng = StdRng::seed_from_u64(7);
    let mut b = Builder {
        state: State::new(),
        index: 0,
    };
    let notion = IntegrationId::new("notion").expect("integration id");
    for t in 0..TENANTS {
        b.apply(Command::CreateTenant {
            tenant: tenant(t),
            display_name: format!("Tenant {t}"),
        });
        let aad = integration_aad(tenant(t).as_str(), notion.as_str());
        b.apply(Command::AddIntegration {
            tenant: tenant(t),
            integration: notion.clone(),
            display_name: "Notion".into(),
            sealed_token: master
                .seal(b"ntn_0123456789abcdef0123456789abcdef", &aad, &mut rng)
                .expect("seal"),
            budget: Budget {
                requests_per_second: 3,
                burst: 5,
            },
        });
        for w in 0..WORKSPACES {
            b.apply(Command::CreateWorkspace {
                tenant: tenant(t),
                workspace: workspace(w),
                display_name: format!("Workspace {w}"),
                integration: notion.clone(),
            });
        }
        for p in 0..PRINCIPALS {
            b.apply(Command::CreatePrincipal {
                tenant: tenant(t),
                principal: principal(p),
                display_name: format!("Principal {p}"),
            });
            b.apply(Command::GrantWorkspace {
                tenant: tenant(t),
                principal: principal(p),
                workspace: workspace(p % WORKSPACES),
            });
            let mut bindings = vec![(Role::StandardUser, ws_scope(t, (p + 1) % WORKSPACES))];
            match p {
                0 => bindings.push((Role::WorkspaceManager, ws_scope(t, 0))),
                1 => bindings.push((Role::TenantAdmin, RoleScope::Tenant { tenant: tenant(t) })),
                _ => {}
            }
            for (role, scope) in bindings {
                b.apply(Command::AssignRole {
                    subject: subject(t, p),
                    role,
                    scope,
                    granted_at_ms: NOW_MS - 1_000,
                    expires_at_ms: None,
                    justification: None,
                });
            }
            b.apply(Command::IssueToken {
                tenant: tenant(t),
                principal: principal(p),
                workspace: workspace(p % WORKSPACES),
                token_id: TokenId::new(format!("t{t:03}-p{p}")).expect("token id"),
                secret_hash: hash_api_token(&api_secret(t, p)),
                scopes: BTreeSet::from([
                    "mcp_server_access".to_owned(),
                    "notion_workspace_read".to_owned(),
                ]),
                issued_at_ms: NOW_MS - 1_000,
                expires_at_ms: Some(NOW_MS + 86_400_000),
            });
        }
        b.apply(Command::AddRestriction {
            subject: subject(t, 9),
            permission: Some(Permission::NotionWrite),
            scope: RoleScope::Tenant { tenant: tenant(t) },
            set_at_ms: NOW_MS - 1_000,
            justification: "read-only contractor".into(),
        });
    }

    // The shard map: three labelled live nodes, every occupied shard placed.
    for node in 1..=NODES {
        b.apply(Command::SetNodeLabels {
            node,
            labels: NodeLabels {
                region: "eu-west".into(),
                zone: Some(format!("z{node}")),
                capacity: 100,
            },
        });
    }
    let liveness = Liveness {
        last_seen_ms: (1..=NODES).map(|n| (n, NOW_MS)).collect::<BTreeMap<_, _>>(),
    };
    let cfg = PlanConfig {
        max_moves_per_round: 1_024,
        suspect_after_ms: 5_000,
        grace_ms: 30_000,
    };
    let round = plan(
        b.state.placement(),
        &occupied_shards(&b.state),
        &liveness,
        NOW_MS,
        &cfg,
    );
    assert!(round.pending.is_empty() && round.unplaceable.is_empty());
    b.apply(Command::ApplyPlacement { moves: round.moves });

    // A tool call's audit records, in one group commit.
    let events = (0..CHAIN_RECORDS)
        .map(|n| AuditEvent {
            at_ms: NOW_MS + n as u64,
            node: 1 + n as u64 % NODES,
            principal: format!("t000/p{}", n % PRINCIPALS),
            tenant: Some(tenant(0)),
            workspace: Some(format!("w{}", n % WORKSPACES)),
            kind: "tool".into(),
            action: "notion-fetch".into(),
            resource: Some(format!("1c2d3e4f-5a6b-4c7d-8e9f-{n:012x}")),
            outcome: "ok".into(),
            latency_ms: Some(40 + n as u64 % 60),
            notion_requests: Some(1),
            justification: None,
            severity: Severity::Info,
        })
        .collect();
    b.apply(Command::AppendAudit { events });

    // The built-in issuer: an EdDSA key, then an ES256 key that takes over while the first
    // still validates.
    let settings = JwtSettings::from_config(&Config::default());
    let request = IssueRequest {
        tenant: tenant(42),
        principal: principal(5),
        workspace: workspace(5 % WORKSPACES),
        scopes: BTreeSet::from([
            "mcp_server_access".to_owned(),
            "notion_workspace_read".to_owned(),
        ]),
        ttl_secs: 3_600,
    };
    let mut signed = Vec::new();
    for (alg, previous_not_after_ms) in [
        (JwtAlg::EdDSA, None),
        (JwtAlg::ES256, Some(NOW_MS + 86_400_000)),
    ] {
        let key = generate_key(&master, alg, NOW_MS).expect("signing key");
        b.apply(add_key_command(key, NOW_MS, true, previous_not_after_ms));
        let jwt = issue(&b.state, &master, &settings, &request, NOW_MS).expect("issue");
        signed.push(jwt.token);
    }
    let [eddsa_token, es256_token] = <[String; 2]>::try_from(signed).expect("two tokens");
    Fixture {
        state: b.state,
        settings,
        eddsa_token,
        es256_token,
    }
}

/// An opaque API token as the front resolves it: SHA-256 of the secret, the state's hash
/// index, then revocation and expiry.
fn opaque_lookup<'a>(state: &'a State, secret: &str, now_ms: u64) -> Option<&'a ApiToken> {
    let token = state.token_by_hash(&hash_api_token(secret))?;
    token.is_valid_at(now_ms).then_some(token)
}

/// The node that owns a tenant's shard in the applied map, and its epoch.
fn tenant_owner(state: &State, tenant: &TenantId) -> ShardOwner {
    let placement = state.placement();
    placement.owner(&shard_of(
        &placement.residency_of(tenant),
        &tenant_key(tenant),
    ))
}

fn bench_authorize(c: &mut Criterion, f: &Fixture) {
    let who = subject(42, 5);
    // p5 is bound as a standard user at w2, a member of w1, and has nothing at w3.
    let bound = ws_scope(42, 2);
    let nothing = ws_scope(42, 3);
    let restricted = subject(42, 9);
    let at = NOW_MS + 1_000;
    assert!(authorize(&f.state, &who, Permission::NotionRead, &bound, at).allowed);
    assert!(!authorize(&f.state, &who, Permission::NotionWrite, &nothing, at).allowed);
    let d = authorize(&f.state, &restricted, Permission::NotionWrite, &bound, at);
    assert!(
        !d.allowed && d.reason.contains("restriction"),
        "{}",
        d.reason
    );

    let mut g = c.benchmark_group("authorize");
    g.bench_function("allowed_by_binding", |b| {
        b.iter(|| {
            authorize(
                &f.state,
                black_box(&who),
                Permission::NotionRead,
                &bound,
                at,
            )
        })
    });
    g.bench_function("denied_no_grant", |b| {
        b.iter(|| {
            authorize(
                &f.state,
                black_box(&who),
                Permission::NotionWrite,
                &nothing,
                at,
            )
        })
    });
    g.bench_function("denied_by_restriction", |b| {
        b.iter(|| {
            authorize(
                &f.state,
                black_box(&restricted),
                Permission::NotionWrite,
                &bound,
                at,
            )
        })
    });
    g.finish();
}

fn bench_tokens(c: &mut Criterion, f: &Fixture) {
    let at = NOW_MS + 1_000;
    for token in [&f.eddsa_token, &f.es256_token] {
        let caller = validate_builtin(&f.state, &f.settings, token, at).expect("valid token");
        assert_eq!(
            (caller.tenant_id.as_str(), caller.principal_id.as_str()),
            ("t042", "p5")
        );
    }
    let secret = api_secret(42, 5);
    assert_eq!(
        opaque_lookup(&f.state, &secret, at).map(|t| t.principal.as_str()),
        Some("p5")
    );
    assert!(opaque_lookup(&f.state, "qk_unknown", at).is_none());

    let mut g = c.benchmark_group("token");
    g.bench_function("jwt_eddsa_validate", |b| {
        b.iter(|| validate_builtin(&f.state, &f.settings, black_box(&f.eddsa_token), at))
    });
    g.bench_function("jwt_es256_validate", |b| {
        b.iter(|| validate_builtin(&f.state, &f.settings, black_box(&f.es256_token), at))
    });
    g.bench_function("opaque_lookup", |b| {
        b.iter(|| opaque_lookup(&f.state, black_box(&secret), at).is_some())
    });
    g.finish();
}

fn bench_audit(c: &mut Criterion, f: &Fixture) {
    let chain = f.state.audit().chain("t000").expect("t000's audit chain");
    assert_eq!(chain.records.len(), CHAIN_RECORDS);
    let record = &chain.records[CHAIN_RECORDS / 2];
    assert_eq!(record_hash(record), record.hash);
    assert_eq!(
        verify_chain(&chain.records, Some((0, GENESIS_HASH))),
        Ok(CHAIN_RECORDS as u64)
    );

    let mut g = c.benchmark_group("audit");
    g.bench_function("record_hash", |b| b.iter(|| record_hash(black_box(record))));
    g.bench_function("verify_chain_1000", |b| {
        b.iter(|| verify_chain(black_box(&chain.records), Some((0, GENESIS_HASH))))
    });
    g.finish();
}

fn bench_placement(c: &mut Criterion, f: &Fixture) {
    let t = tenant(42);
    let key = tenant_key(&t);
    let owner = tenant_owner(&f.state, &t);
    assert!(owner.node.is_some_and(|n| (1..=NODES).contains(&n)) && owner.epoch >= 1);

    let mut g = c.benchmark_group("placement");
    g.bench_function("shard_index", |b| b.iter(|| shard_index(black_box(&key))));
    g.bench_function("tenant_owner", |b| {
        b.iter(|| tenant_owner(&f.state, black_box(&t)))
    });
    g.finish();
}

/// A rich text array as Notion returns it.
fn rich(parts: &[(&str, &str)]) -> Value {
    Value::Array(
        parts
            .iter()
            .map(|(text, style)| {
                let link = style.strip_prefix("link:").map(|url| json!({ "url": url }));
                json!({
                    "type": "text",
                    "text": { "content": text, "link": link },
                    "annotations": {
                        "bold": *style == "bold",
                        "italic": *style == "italic",
                        "strikethrough": false,
                        "underline": false,
                        "code": *style == "code",
                        "color": "default"
                    },
                    "plain_text": text,
                    "href": style.strip_prefix("link:"),
                })
            })
            .collect(),
    )
}

/// A block as Notion returns it (children attached where the fetch tool puts them).
fn block(n: &mut u32, ty: &str, mut body: Value, children: Vec<Value>) -> Value {
    *n += 1;
    let has_children = !children.is_empty();
    if has_children {
        body["children"] = Value::Array(children);
    }
    json!({
        "object": "block",
        "id": format!("5b1e6c2a-0d3f-4e8a-9b7c-{:012x}", n),
        "created_time": "2026-11-02T09:14:00.000Z",
        "last_edited_time": "2026-11-30T17:42:00.000Z",
        "has_children": has_children,
        "archived": false,
        "type": ty,
        ty: body,
    })
}

/// A page of about 100 blocks: ten sections of a heading, paragraphs with inline styles,
/// nested lists, a to-do, a quote, code and a divider.
fn page_blocks() -> Vec<Value> {
    let mut n = 0;
    let mut blocks = Vec::new();
    for s in 0..10 {
        let heading = format!("Section {s}: rollout of the ingestion service");
        blocks.push(block(
            &mut n,
            "heading_2",
            json!({ "rich_text": rich(&[(&heading, "")]), "is_toggleable": false }),
            vec![],
        ));
        blocks.push(block(
            &mut n,
            "paragraph",
            json!({ "rich_text": rich(&[
                ("The ", ""),
                ("platform team", "bold"),
                (" owns this step; see ", ""),
                ("the runbook", "link:https://www.notion.so/runbook"),
                (" and run ", ""),
                ("quire ctl usage", "code"),
                (" before the window opens.", "italic"),
            ]) }),
            vec![],
        ));
        let child = block(
            &mut n,
            "bulleted_list_item",
            json!({ "rich_text": rich(&[("nested detail with a ", ""), ("link", "link:https://example.com")]) }),
            vec![],
        );
        blocks.push(block(
            &mut n,
            "bulleted_list_item",
            json!({ "rich_text": rich(&[("Owners confirmed", "bold"), (" for every shard", "")]) }),
            vec![child],
        ));
        blocks.push(block(
            &mut n,
            "bulleted_list_item",
            json!({ "rich_text": rich(&[("Dashboards updated", "")]) }),
            vec![],
        ));
        for step in ["Drain the node", "Upgrade and restart"] {
            blocks.push(block(
                &mut n,
                "numbered_list_item",
                json!({ "rich_text": rich(&[(step, "")]) }),
                vec![],
            ));
        }
        blocks.push(block(
            &mut n,
            "to_do",
            json!({ "rich_text": rich(&[("Sign-off from security", "")]), "checked": s % 2 == 0 }),
            vec![],
        ));
        blocks.push(block(
            &mut n,
            "quote",
            json!({ "rich_text": rich(&[("Never over Notion's limit.", "italic")]) }),
            vec![],
        ));
        blocks.push(block(
            &mut n,
            "code",
            json!({
                "rich_text": rich(&[("quire ctl nodes drain 2\nquire ctl nodes status", "")]),
                "language": "shell",
                "caption": []
            }),
            vec![],
        ));
        blocks.push(block(&mut n, "divider", json!({}), vec![]));
    }
    blocks
}

/// A Markdown document of about 5 KB with every construct the converter knows.
fn markdown_document() -> String {
    let mut md = String::from("# Incident review: rate-limit pauses\n\n");
    let mut s = 0;
    while md.len() < 5 * 1024 - 300 {
        md.push_str(&format!(
            "## Finding {s}\n\n\
             The **limiter** paused the integration for *2 seconds* after a 429; see \
             [the timeline](https://example.com/incidents/{s}) and `quire ctl usage --tenant acme`.\n\n\
             - Budget used: **97%** with ~~three~~ zero 429s\n  \
             - measured on [node 2](https://example.com/nodes/2)\n\
             - Follow-up owner assigned\n\n\
             1. Reproduce with the sandbox\n\
             2. Add a regression test\n\n\
             - [x] Timeline written\n\
             - [ ] Postmortem shared\n\n\
             > Every request passes through its integration's limiter.\n\n\
             ```toml\n[notion]\nrequests_per_second = 3\n```\n\n---\n\n"
        ));
        s += 1;
    }
    md
}

fn bench_markdown(c: &mut Criterion) {
    let blocks = page_blocks();
    assert_eq!(blocks.len(), 100);
    let rendered = blocks_to_markdown(&blocks);
    assert!(rendered.contains("**platform team**") && rendered.contains("  - nested detail"));
    let doc = markdown_document();
    assert!(
        (4 * 1024..6 * 1024).contains(&doc.len()),
        "{} bytes",
        doc.len()
    );
    let parsed = markdown_to_blocks(&doc).expect("markdown converts");
    assert!(parsed.len() > 50, "{} blocks", parsed.len());

    let mut g = c.benchmark_group("markdown");
    g.bench_function("blocks_to_markdown_100_blocks", |b| {
        b.iter(|| blocks_to_markdown(black_box(&blocks)))
    });
    g.bench_function("markdown_to_blocks_5kb", |b| {
        b.iter(|| markdown_to_blocks(black_box(&doc)))
    });
    g.finish();
}

fn hot_paths(c: &mut Criterion) {
    let f = fixture();
    bench_authorize(c, &f);
    bench_tokens(c, &f);
    bench_audit(c, &f);
    bench_placement(c, &f);
    bench_markdown(c);
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);

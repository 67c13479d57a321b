//! JWT bearer tokens against the real `quire` binary (`serve --sandbox` on loopback):
//! a built-in-issuer JWT issued through the admin API (and `quire ctl tokens issue --jwt`)
//! makes a tool call at /mcp until its id is revoked; and a tenant's OpenID Connect provider —
//! a local stand-in serving discovery and JWKS over HTTPS with a private CA — whose key is
//! rotated mid-test: Quire refetches on the unknown kid and accepts the new key's tokens,
//! refuses the removed key's, and a flood of bogus kids does not make it hammer the provider.

mod cluster_common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cluster_common::mcp::{ACCEPT, PROTOCOL_VERSION, initialize_request, message_of};
use cluster_common::process::{self, Node, sandbox_in};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// Least time between two fetches of the provider's keys, as configured below.
const REFETCH_INTERVAL_MS: u64 = 1_500;

/// A sandbox node logging at info with the configuration file `config`.
fn start_node(dir: &Path, config: &Path) -> Node {
    let mut node = sandbox_in(dir, "info");
    node.command.arg("--config").arg(config);
    node.spawn()
}

/// The node's base URL and admin token once it wrote client.json and answers /readyz.
async fn wait_ready(node: &mut Node) -> (String, String) {
    let ready = process::wait_ready(node, &reqwest::Client::new(), None).await;
    (ready.base, ready.admin_token)
}

async fn admin(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let r = http
        .request(method, format!("{base}/admin/v1{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("admin API request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn mcp(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    session: Option<&str>,
    message: Value,
) -> (u16, Option<String>, String, String) {
    let mut request = http
        .post(format!("{base}/mcp"))
        .bearer_auth(token)
        .header("Accept", ACCEPT)
        .header("mcp-protocol-version", PROTOCOL_VERSION)
        .json(&message)
        .timeout(Duration::from_secs(30));
    if let Some(id) = session {
        request = request.header("mcp-session-id", id);
    }
    let r = request.send().await.expect("POST /mcp");
    let status = r.status().as_u16();
    let session = r
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let challenge = r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        status,
        session,
        challenge,
        r.text().await.unwrap_or_default(),
    )
}

fn initialize() -> Value {
    initialize_request(1, "jwt-test")
}

/// Opens a session and calls `notion-get-self` once; the tool's JSON-RPC result.
async fn call_a_tool(http: &reqwest::Client, base: &str, token: &str) -> Value {
    let (status, session, _, body) = mcp(http, base, token, None, initialize()).await;
    assert_eq!(status, 200, "initialize: {body}");
    let session = session.expect("a session id");
    let (status, ..) = mcp(
        http,
        base,
        token,
        Some(&session),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert!(status == 202 || status == 200, "initialized: {status}");
    let (status, _, _, body) = mcp(
        http,
        base,
        token,
        Some(&session),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "notion-get-self", "arguments": {}}}),
    )
    .await;
    assert_eq!(status, 200, "tools/call: {body}");
    message_of(&body).unwrap_or_else(|| panic!("no JSON-RPC answer in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_built_in_jwt_calls_a_tool_until_its_id_is_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("quire.toml");
    std::fs::write(&config, "[security]\njwt_leeway_secs = 5\n").unwrap();
    let mut node = start_node(dir.path(), &config);
    let (base, admin_token) = wait_ready(&mut node).await;
    let http = reqwest::Client::new();

    // The sandbox cluster got its first signing key at bootstrap.
    let (status, keys) = admin(
        &http,
        &base,
        &admin_token,
        reqwest::Method::GET,
        "/jwt/keys",
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{keys}");
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(1), "{keys}");
    assert_eq!(keys["keys"][0]["alg"], "EdDSA");
    assert_eq!(keys["keys"][0]["current"], true);
    assert_eq!(keys["keys"][0]["jwk"]["kty"], "OKP");
    // Bad issue requests are refused with the field named.
    for (body, want) in [
        (
            json!({"principal": "demo-user", "workspace": "demo", "ttl_secs": 100_000_000}),
            400,
        ),
        (json!({"principal": "nobody", "workspace": "demo"}), 404),
        (
            json!({"principal": "demo-user", "workspace": "demo", "scopes": ["root"]}),
            400,
        ),
    ] {
        let (status, answer) = admin(
            &http,
            &base,
            &admin_token,
            reqwest::Method::POST,
            "/tenants/demo/jwt",
            body.clone(),
        )
        .await;
        assert_eq!(status, want, "{body} -> {answer}");
    }

    // `quire ctl tokens issue --jwt` prints the token once.
    let out = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(["ctl", "--url", &base, "--token", &admin_token])
        .args([
            "tokens",
            "issue",
            "--jwt",
            "--principal",
            "demo/demo-user",
            "--workspace",
            "demo",
            "--scopes",
            "mcp_server_access,notion_workspace_read",
            "--ttl",
            "1h",
        ])
        .env_remove("QUIRE_ADMIN_TOKEN")
        .env_remove("QUIRE_URL")
        .output()
        .expect("run quire ctl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .unwrap_or_else(|| panic!("no token line in {stdout}"))
        .trim()
        .to_owned();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "demo-user");
    assert_eq!(claims["tenant"], "demo");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3600
    );

    let answer = call_a_tool(&http, &base, &token).await;
    assert!(answer.get("result").is_some(), "{answer}");
    assert_ne!(answer["result"]["isError"], true, "{answer}");

    // A write tool needs a scope the token lacks: 403 naming it, before the tool runs.
    let (status, session, _, _) = mcp(&http, &base, &token, None, initialize()).await;
    assert_eq!(status, 200);
    let (status, _, challenge, _) = mcp(
        &http,
        &base,
        &token,
        session.as_deref(),
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
               "params": {"name": "notion-create-pages", "arguments": {}}}),
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        challenge.contains(r#"error="insufficient_scope""#),
        "{challenge}"
    );

    // A tampered token (another principal in the claims) is refused.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut forged = claims.clone();
    forged["sub"] = "someone-else".into();
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
    let (status, _, challenge, _) = mcp(&http, &base, &parts.join("."), None, initialize()).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("resource_metadata="), "{challenge}");

    // Revoked by its id: refused from then on.
    let (status, revoked) = admin(
        &http,
        &base,
        &admin_token,
        reqwest::Method::POST,
        "/jwt/revocations",
        json!({"token": token}),
    )
    .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["jti"], claims["jti"]);
    let (status, ..) = mcp(&http, &base, &token, None, initialize()).await;
    assert_eq!(status, 401);

    // Rotation: the new key signs, the old one's tokens still verify during the overlap.
    let (status, body) = admin(
        &http,
        &base,
        &admin_token,
        reqwest::Method::POST,
        "/tenants/demo/jwt",
        json!({"principal": "demo-user", "workspace": "demo", "ttl_secs": 600}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let old_key_token = body["token"].as_str().unwrap().to_owned();
    let old_kid = body["kid"].as_str().unwrap().to_owned();
    let (status, rotated) = admin(
        &http,
        &base,
        &admin_token,
        reqwest::Method::POST,
        "/jwt/keys/rotate",
        json!({"alg": "ES256", "overlap_secs": 600}),
    )
    .await;
    assert_eq!(status, 201, "{rotated}");
    assert_eq!(rotated["previous"], old_kid.as_str());
    let (status, body) = admin(
        &http,
        &base,
        &admin_token,
        reqwest::Method::POST,
        "/tenants/demo/jwt",
        json!({"principal": "demo-user", "workspace": "demo"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["kid"], rotated["kid"]);
    let new_key_token = body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        mcp(&http, &base, &old_key_token, None, initialize())
            .await
            .0,
        200
    );
    assert_eq!(
        mcp(&http, &base, &new_key_token, None, initialize())
            .await
            .0,
        200
    );
    // Retired with no overlap left: the old key's tokens are refused at once.
    let (status, body) = admin(
        &http,
        &base,
        &admin_token,
        reqwest::Method::POST,
        &format!("/jwt/keys/{old_kid}/retire"),
        json!({"overlap_secs": 0}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        mcp(&http, &base, &old_key_token, None, initialize())
            .await
            .0,
        401
    );
    assert_eq!(
        mcp(&http, &base, &new_key_token, None, initialize())
            .await
            .0,
        200
    );
}

/// A stand-in OpenID Connect provider: discovery and JWKS over HTTPS; which keys it
/// publishes can change while it runs, and it counts JWKS fetches.
struct Provider {
    issuer: String,
    jwks: Arc<Mutex<Value>>,
    jwks_fetches: Arc<AtomicU64>,
}

async fn start_provider(dir: &Path) -> (Provider, PathBuf) {
    let ca = quire_transport::tls::generate_ca("oidc-test").expect("test setup");
    let cert =
        quire_node::certs::issue_http_cert(&ca.cert_pem, &ca.key_pem, &["127.0.0.1".to_owned()])
            .expect("test setup");
    let ca_path = dir.join("oidc-ca.pem");
    std::fs::write(&ca_path, &ca.cert_pem).expect("test setup");
    let cert_path = dir.join("oidc.pem");
    let key_path = dir.join("oidc.key");
    std::fs::write(&cert_path, &cert.cert_pem).expect("test setup");
    std::fs::write(&key_path, &cert.key_pem).expect("test setup");
    let tls = quire_node::https::FrontTls::load(
        quire_node::https::TlsPaths {
            cert: cert_path,
            key: key_path,
        },
        "1.3",
    )
    .expect("test setup");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test setup");
    let addr: SocketAddr = tcp.local_addr().expect("test setup");
    let issuer = format!("https://127.0.0.1:{}", addr.port());
    let jwks = Arc::new(Mutex::new(json!({"keys": []})));
    let jwks_fetches = Arc::new(AtomicU64::new(0));
    let discovery = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/jwks"),
        "id_token_signing_alg_values_supported": ["ES256", "EdDSA"],
    });
    let (served, fetches) = (jwks.clone(), jwks_fetches.clone());
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                let d = discovery.clone();
                async move { axum::Json(d) }
            }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || {
                fetches.fetch_add(1, Ordering::SeqCst);
                let keys = served.lock().expect("test setup").clone();
                async move { axum::Json(keys) }
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(tls.listener(tcp, addr), app).await;
    });
    (
        Provider {
            issuer,
            jwks,
            jwks_fetches,
        },
        ca_path,
    )
}

/// An ES256 key of the provider: its signing key and JWK.
fn provider_key(kid: &str) -> (EncodingKey, Value) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("test setup");
    let raw = pair.public_key_raw();
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
    });
    (EncodingKey::from_ec_der(&pair.serialize_der()), jwk)
}

fn provider_token(
    provider: &Provider,
    key: &EncodingKey,
    kid: &str,
    sub: &str,
    groups: &[&str],
) -> String {
    let now = std::time::UNIX_EPOCH
        .elapsed()
        .expect("test setup")
        .as_secs();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    let claims = json!({
        "iss": provider.issuer, "aud": "https://quire.test/mcp", "sub": sub,
        "iat": now, "nbf": now, "exp": now + 600, "jti": format!("idp-{kid}-{sub}"),
        "groups": groups,
    });
    jsonwebtoken::encode(&header, &claims, key).expect("test setup")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_oidc_provider_is_trusted_and_its_key_rotation_followed() {
    let dir = tempfile::tempdir().unwrap();
    let (provider, ca_path) = start_provider(dir.path()).await;
    let (k1, jwk1) = provider_key("k1");
    *provider.jwks.lock().unwrap() = json!({"keys": [jwk1]});
    let config = dir.path().join("quire.toml");
    std::fs::write(
        &config,
        format!(
            "[security]\noidc_ca_file = {:?}\noidc_refetch_min_interval_ms = {REFETCH_INTERVAL_MS}\n",
            ca_path.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut node = start_node(dir.path(), &config);
    let (base, admin_token) = wait_ready(&mut node).await;
    let http = reqwest::Client::new();

    let (status, body) = admin(
        &http,
        &base,
        &admin_token,
        reqwest::Method::PUT,
        "/tenants/demo/oidc",
        json!({
            "issuer": provider.issuer,
            "audience": "https://quire.test/mcp",
            "default_workspace": "demo",
            "groups": {
                "agents": {"role": "standard_user", "workspace": "demo",
                           "scopes": ["mcp_server_access", "notion_workspace_read"]},
                "auditors": {"scopes": ["audit_access"]},
            },
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin(
        &http,
        &base,
        &admin_token,
        reqwest::Method::GET,
        "/tenants/demo/oidc",
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["issuer"], provider.issuer.as_str());
    assert_eq!(body["groups"]["agents"]["role"], "standard_user");
    // A provider reached over plain HTTP, or a role no tenant can hand out, is refused.
    for bad in [
        json!({"issuer": "http://127.0.0.1:9/"}),
        json!({"issuer": provider.issuer, "groups": {"x": {"role": "enterprise_admin"}}}),
        json!({"issuer": provider.issuer, "groups": {"x": {"scopes": ["everything"]}}}),
    ] {
        let (status, body) = admin(
            &http,
            &base,
            &admin_token,
            reqwest::Method::PUT,
            "/tenants/demo/oidc",
            bad.clone(),
        )
        .await;
        assert_eq!(status, 400, "{bad} -> {body}");
    }

    // The provider's token, for the demo user in group "agents": a tool call works.
    let token = provider_token(&provider, &k1, "k1", "demo-user", &["agents"]);
    let answer = call_a_tool(&http, &base, &token).await;
    assert_ne!(answer["result"]["isError"], true, "{answer}");
    let after_first = provider.jwks_fetches.load(Ordering::SeqCst);
    assert_eq!(after_first, 1, "the keys were fetched once and cached");
    // Without a group granting mcp_server_access the same person is refused with 403.
    let token = provider_token(&provider, &k1, "k1", "demo-user", &["auditors"]);
    let (status, _, challenge, _) = mcp(&http, &base, &token, None, initialize()).await;
    assert_eq!(status, 403);
    assert!(challenge.contains("mcp_server_access"), "{challenge}");
    // A token for another audience is refused.
    let now = std::time::UNIX_EPOCH.elapsed().unwrap().as_secs();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    let elsewhere = jsonwebtoken::encode(
        &header,
        &json!({"iss": provider.issuer, "aud": "https://elsewhere/mcp", "sub": "demo-user",
                "exp": now + 600, "groups": ["agents"]}),
        &k1,
    )
    .unwrap();
    assert_eq!(
        mcp(&http, &base, &elsewhere, None, initialize()).await.0,
        401
    );

    // A flood of tokens with bogus kids: each refused, the provider asked at most once more.
    for i in 0..30 {
        let bogus = provider_token(
            &provider,
            &k1,
            &format!("bogus-{i}"),
            "demo-user",
            &["agents"],
        );
        assert_eq!(mcp(&http, &base, &bogus, None, initialize()).await.0, 401);
    }
    let after_flood = provider.jwks_fetches.load(Ordering::SeqCst);
    assert!(
        after_flood <= after_first + 1,
        "30 bogus kids made {} fetches",
        after_flood - after_first
    );

    // The provider rotates: k2 replaces k1. Quire refetches on the unknown kid (once the
    // refetch interval allows) and accepts k2's tokens; k1's are refused from then on.
    let (k2, jwk2) = provider_key("k2");
    *provider.jwks.lock().unwrap() = json!({"keys": [jwk2]});
    let new_token = provider_token(&provider, &k2, "k2", "demo-user", &["agents"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = mcp(&http, &base, &new_token, None, initialize()).await.0;
        if status == 200 {
            break;
        }
        assert_eq!(status, 401);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotated key was never accepted:\n{}",
            node.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let answer = call_a_tool(&http, &base, &new_token).await;
    assert_ne!(answer["result"]["isError"], true, "{answer}");
    let old_token = provider_token(&provider, &k1, "k1", "demo-user", &["agents"]);
    assert_eq!(
        mcp(&http, &base, &old_token, None, initialize()).await.0,
        401
    );

    // Revoking the provider's token by its id works as for Quire's own.
    let (status, body) = admin(
        &http,
        &base,
        &admin_token,
        reqwest::Method::POST,
        "/jwt/revocations",
        json!({"token": new_token}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenant"], "demo");
    assert_eq!(
        mcp(&http, &base, &new_token, None, initialize()).await.0,
        401
    );
}

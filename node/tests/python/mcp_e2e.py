"""End-to-end check of a running Quire node with the official MCP Python SDK (`mcp` on PyPI).

Usage: python mcp_e2e.py CLIENT_JSON [--burst N]

CLIENT_JSON is the `client.json` that `quire serve --sandbox` writes. The script lists the
tools, calls every tool with valid input and with bad input, checks that a request without a
token gets 401 with a Bearer challenge, runs a burst of concurrent `notion-fetch` calls of
different pages on one integration, and reads the sandbox's counters. It prints one JSON
object with its figures and exits non-zero on the first failed check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

EXPECTED_TOOLS = {
    "notion-search",
    "notion-fetch",
    "notion-create-pages",
    "notion-update-page",
    "notion-move-pages",
    "notion-create-database",
    "notion-update-database",
    "notion-query-data-source",
    "notion-append-blocks",
    "notion-get-block-children",
    "notion-create-comment",
    "notion-get-comments",
    "notion-get-users",
    "notion-get-user",
    "notion-get-self",
}

TIMEOUT_S = 180.0


class CheckFailed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def connect(url: str, token: str, mode: str) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT_S)
    return Client(streamable_http_client(url, http_client=http), mode=mode)


def structured(result: Any) -> dict:
    data = result.structured_content
    if isinstance(data, dict):
        return data
    text = "".join(getattr(c, "text", "") for c in result.content)
    try:
        parsed = json.loads(text)
        return parsed if isinstance(parsed, dict) else {}
    except ValueError:
        return {}


def text_of(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def call_ok(client: Client, name: str, args: dict) -> Any:
    result = await client.call_tool(name, args, read_timeout_seconds=TIMEOUT_S)
    check(not result.is_error, f"{name}({json.dumps(args)[:200]}) failed: {text_of(result)[:500]}")
    return result


async def call_err(client: Client, name: str, args: dict, code: str) -> Any:
    result = await client.call_tool(name, args, read_timeout_seconds=TIMEOUT_S)
    check(result.is_error, f"{name}({json.dumps(args)[:200]}) should have failed but returned {text_of(result)[:300]}")
    got = structured(result).get("code")
    check(got == code, f"{name}: expected tool error {code!r}, got {got!r}: {text_of(result)[:300]}")
    return result


async def no_token_is_401(url: str) -> dict:
    async with httpx2.AsyncClient(timeout=30.0) as http:
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "e2e", "version": "0"},
            },
        }
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        r = await http.post(url, json=body, headers=headers)
        check(r.status_code == 401, f"no token: expected 401, got {r.status_code}")
        challenge = r.headers.get("www-authenticate", "")
        check(challenge.lower().startswith("bearer"), f"no token: WWW-Authenticate is {challenge!r}")
        r = await http.post(url, json=body, headers={**headers, "Authorization": "Bearer qk_wrong"})
        check(r.status_code == 401, f"wrong token: expected 401, got {r.status_code}")
        check("invalid_token" in r.headers.get("www-authenticate", ""), "wrong token: no invalid_token challenge")
        return {"no_token_status": 401, "wrong_token_status": 401}


async def scopes_are_enforced(url: str, admin_token: str) -> dict:
    """401 names the protected-resource metadata; tokens without a tool's scope get 403
    `insufficient_scope` naming it, as seen by the official client."""
    base = url.removesuffix("/mcp")
    async with httpx2.AsyncClient(timeout=30.0) as http:
        r = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        challenge = r.headers.get("www-authenticate", "")
        check('resource_metadata="' in challenge, f"401 challenge lacks resource_metadata: {challenge!r}")
        metadata_url = challenge.split('resource_metadata="', 1)[1].split('"', 1)[0]
        meta = (await http.get(metadata_url)).json()
        check(meta.get("resource") == url, f"metadata resource {meta.get('resource')!r} is not {url!r}")
        for scope in ["notion_workspace_read", "notion_workspace_write", "mcp_server_access", "admin_operations", "audit_access"]:
            check(scope in meta.get("scopes_supported", []), f"metadata lacks scope {scope}")
        tokens = {}
        for name, scopes in [("read_only", ["mcp_server_access", "notion_workspace_read"]), ("no_mcp", ["notion_workspace_read"])]:
            r = await http.post(
                f"{base}/admin/v1/tenants/demo/tokens",
                json={"principal": "demo-user", "workspace": "demo", "scopes": scopes},
                headers={"Authorization": f"Bearer {admin_token}"},
            )
            check(r.status_code == 201, f"issuing the {name} token: {r.status_code} {r.text[:300]}")
            tokens[name] = r.json()["token"]

    seen: list[tuple[int, str]] = []

    async def record(response: Any) -> None:
        if response.status_code >= 400:
            seen.append((response.status_code, response.headers.get("www-authenticate", "")))

    def client_with(token: str) -> Client:
        http = httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT_S, event_hooks={"response": [record]}
        )
        return Client(streamable_http_client(url, http_client=http), mode="legacy")

    async with client_with(tokens["read_only"]) as client:
        pages = await search_ids(client, "page")
        await call_ok(client, "notion-fetch", {"id": pages[0]})
        refused = False
        try:
            result = await client.call_tool(
                "notion-create-pages", {"parent": {"page_id": pages[0]}, "pages": [{"title": "x"}]}
            )
            refused = result.is_error
        except Exception:  # the SDK surfaces the HTTP 403 as an error
            refused = True
        check(refused, "a read-only token created a page")
    write_403 = [c for s, c in seen if s == 403]
    check(write_403, f"no HTTP 403 for a write tool with a read-only token; saw {seen}")
    check('error="insufficient_scope"' in write_403[-1], f"403 challenge: {write_403[-1]!r}")
    check('scope="notion_workspace_write"' in write_403[-1], f"403 challenge: {write_403[-1]!r}")

    seen.clear()
    try:
        async with client_with(tokens["no_mcp"]) as client:
            await client.list_tools()
        check(False, "a token without mcp_server_access was served")
    except CheckFailed:
        raise
    except BaseException:  # noqa: BLE001 - the SDK raises on the 403 (possibly as a group)
        pass
    check(any(s == 403 and 'scope="mcp_server_access"' in c for s, c in seen), f"no 403 naming mcp_server_access: {seen}")
    return {"read_only_write_status": 403, "no_mcp_status": 403}


async def workflow_templates_are_prompts(url: str, token: str, admin_token: str) -> dict:
    """A workspace manager's template is an MCP prompt; running it renders the arguments and
    leaves an audit record."""
    base = url.removesuffix("/mcp")
    admin = {"Authorization": f"Bearer {admin_token}"}
    async with httpx2.AsyncClient(timeout=30.0) as http:
        r = await http.post(
            f"{base}/admin/v1/tenants/demo/workspaces/demo/templates",
            headers=admin,
            json={
                "name": "weekly-summary",
                "title": "Weekly summary",
                "description": "Summarise a project's pages for the week",
                "arguments": [
                    {"name": "project", "description": "the project", "required": True},
                    {"name": "tone", "required": False},
                ],
                "body": "Search the workspace for {{project}} and summarise this week's changes in a {{tone}} tone.",
            },
        )
        check(r.status_code == 201, f"creating a template: {r.status_code} {r.text[:300]}")
    async with connect(url, token, "legacy") as client:
        listing = await client.list_prompts()
        names = [p.name for p in listing.prompts]
        check("weekly-summary" in names, f"the template is not a prompt: {names}")
        prompt = next(p for p in listing.prompts if p.name == "weekly-summary")
        required = {a.name: bool(a.required) for a in (prompt.arguments or [])}
        check(required == {"project": True, "tone": False}, f"prompt arguments: {required}")
        result = await client.get_prompt("weekly-summary", {"project": "Apollo", "tone": "dry"})
        text = "".join(getattr(m.content, "text", "") for m in result.messages)
        check(
            text == "Search the workspace for Apollo and summarise this week's changes in a dry tone.",
            f"rendered prompt: {text!r}",
        )
        refused = False
        try:
            await client.get_prompt("weekly-summary", {"tone": "dry"})
        except Exception as e:  # noqa: BLE001 - the SDK raises the JSON-RPC error
            refused = "project" in str(e)
        check(refused, "a run without its required argument was not refused")
    async with httpx2.AsyncClient(timeout=30.0) as http:
        r = await http.get(
            f"{base}/admin/v1/audit/records", headers=admin, params={"tenant": "demo", "kind": "workflow"}
        )
        check(r.status_code == 200, f"audit query: {r.status_code} {r.text[:300]}")
        runs = [x for x in r.json()["records"] if x.get("action") == "run:weekly-summary"]
        check(len(runs) == 1, f"expected one audited run, found {len(runs)}")
    return {"prompts": len(names), "prompt_runs_audited": len(runs)}


async def search_ids(client: Client, kind: str, query: str = "") -> list[str]:
    result = await call_ok(client, "notion-search", {"query": query, "filter": kind, "page_size": 100})
    data = structured(result)
    items = data.get("results", [])
    return [item["id"] for item in items if isinstance(item, dict) and "id" in item]


async def every_tool(client: Client) -> dict:
    listing = await client.list_tools()
    names = {t.name for t in listing.tools}
    check(EXPECTED_TOOLS <= names, f"missing tools: {sorted(EXPECTED_TOOLS - names)}")
    for tool in listing.tools:
        check(tool.input_schema.get("type") == "object", f"{tool.name}: input schema is not an object")
        check(tool.annotations is not None, f"{tool.name}: no annotations")
    read_only = {t.name for t in listing.tools if t.annotations and t.annotations.read_only_hint}
    check("notion-fetch" in read_only and "notion-create-pages" not in read_only, "read-only annotations are wrong")

    pages = await search_ids(client, "page")
    check(len(pages) >= 40, f"search found only {len(pages)} pages")
    sources = await search_ids(client, "data_source", "Tasks")
    check(len(sources) >= 1, "search found no data source")
    page, source = pages[0], sources[0]

    fetched = await call_ok(client, "notion-fetch", {"id": page})
    check(len(text_of(fetched)) > 0, "notion-fetch returned no text")
    await call_ok(client, "notion-fetch", {"id": f"https://www.notion.so/Some-Title-{page.replace('-', '')}"})
    await call_ok(client, "notion-fetch", {"id": source})

    rows = await call_ok(client, "notion-query-data-source", {"data_source_id": source, "page_size": 10})
    check(structured(rows).get("has_more") is True, "query of 200+ rows with page_size 10 has no more pages")
    await call_ok(
        client,
        "notion-query-data-source",
        {"data_source_id": source, "page_size": 5, "sorts": [{"timestamp": "created_time", "direction": "descending"}]},
    )

    created = await call_ok(
        client,
        "notion-create-pages",
        {"parent": {"page_id": page}, "pages": [{"title": "Quire e2e page", "content": "# Hello\n\nFrom **Quire**."}]},
    )
    created_data = structured(created)
    new_ids = [p["id"] for p in created_data.get("pages", []) if isinstance(p, dict) and "id" in p]
    check(len(new_ids) == 1, f"notion-create-pages returned {created_data}")
    new_page = new_ids[0]
    await call_ok(client, "notion-update-page", {"page_id": new_page, "title": "Quire e2e page (renamed)"})
    await call_ok(client, "notion-append-blocks", {"block_id": new_page, "markdown": "- one\n- two\n\n```rust\nfn main() {}\n```"})
    children = await call_ok(client, "notion-get-block-children", {"block_id": new_page})
    check("one" in text_of(children), "appended blocks are not among the children")
    await call_ok(client, "notion-move-pages", {"page_ids": [new_page], "new_parent": {"page_id": pages[1]}})
    await call_ok(client, "notion-create-comment", {"page_id": new_page, "text": "A comment from the e2e test"})
    comments = await call_ok(client, "notion-get-comments", {"block_id": new_page})
    check("e2e test" in text_of(comments), "the new comment is not listed")
    db = await call_ok(
        client,
        "notion-create-database",
        {"parent_page_id": page, "title": "E2E tracker", "properties": {"Name": {"title": {}}, "Done": {"checkbox": {}}}},
    )
    db_id = structured(db).get("id")
    check(isinstance(db_id, str), f"notion-create-database returned {structured(db)}")
    await call_ok(client, "notion-update-database", {"database_id": db_id, "title": "E2E tracker (renamed)"})
    users = await call_ok(client, "notion-get-users", {})
    user_ids = [u["id"] for u in structured(users).get("users", []) if isinstance(u, dict) and "id" in u]
    check(len(user_ids) >= 5, f"notion-get-users listed {len(user_ids)} users")
    await call_ok(client, "notion-get-user", {"user_id": user_ids[0]})
    await call_ok(client, "notion-get-self", {})
    await call_ok(client, "notion-update-page", {"page_id": new_page, "in_trash": True})

    # Bad input: clear tool errors, nothing sent to Notion.
    await call_err(client, "notion-fetch", {"id": "not-an-id"}, "invalid_input")
    await call_err(client, "notion-fetch", {}, "invalid_input")
    await call_err(client, "notion-search", {"query": "x", "page_size": 1000}, "invalid_input")
    await call_err(client, "notion-get-user", {"user_id": "00000000-0000-4000-8000-000000000000"}, "object_not_found")
    await call_err(client, "notion-no-such-tool", {}, "unknown_tool")
    return {"tools": len(names), "pages_found": len(pages)}


async def burst(url: str, token: str, sandbox_url: str, n: int, pages: list[str]) -> dict:
    async with httpx2.AsyncClient(timeout=30.0) as http:
        r = await http.post(f"{sandbox_url}/__sandbox/stats/reset")
        check(r.status_code in (200, 204), f"cannot reset sandbox stats: {r.status_code}")
    async with connect(url, token, "legacy") as client:
        started = time.monotonic()
        results = await asyncio.gather(
            *(client.call_tool("notion-fetch", {"id": p}, read_timeout_seconds=TIMEOUT_S) for p in pages[:n]),
            return_exceptions=True,
        )
        elapsed = time.monotonic() - started
    failures = [r for r in results if isinstance(r, BaseException) or r.is_error]
    check(not failures, f"{len(failures)} of {n} concurrent fetches failed, first: {failures[0] if failures else ''}")
    async with httpx2.AsyncClient(timeout=30.0) as http:
        stats = (await http.get(f"{sandbox_url}/__sandbox/stats")).json()
    alpha = stats["integrations"]["alpha"]
    return {
        "burst_calls": n,
        "burst_seconds": round(elapsed, 2),
        "sandbox_requests": alpha["requests"],
        "sandbox_429s": alpha["rate_limited"],
        "sandbox_max_per_second": alpha["max_per_second"],
    }


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("client_json")
    parser.add_argument("--burst", type=int, default=40)
    parser.add_argument("--max-per-second", type=int, default=8, help="the integration's budget in any one second")
    args = parser.parse_args()
    with open(args.client_json) as f:
        conf = json.load(f)
    url, token, sandbox_url = conf["mcp_url"], conf["token"], conf["sandbox_url"]

    report: dict[str, Any] = {}
    report.update(await no_token_is_401(url))
    report.update(await scopes_are_enforced(url, conf["admin_token"]))
    report.update(await workflow_templates_are_prompts(url, token, conf["admin_token"]))

    async with connect(url, token, "legacy") as client:
        report["legacy_protocol_version"] = client.protocol_version
        report.update(await every_tool(client))
        pages = await search_ids(client, "page")

    async with connect(url, token, "2026-07-28") as client:
        listing = await client.list_tools()
        check(len(listing.tools) >= len(EXPECTED_TOOLS), "stateless mode lists too few tools")
        await call_ok(client, "notion-get-self", {})
        await call_ok(client, "notion-fetch", {"id": pages[2]})
        report["stateless_protocol_version"] = client.protocol_version

    report.update(await burst(url, token, sandbox_url, args.burst, pages))
    check(report["sandbox_429s"] == 0, f"the sandbox answered {report['sandbox_429s']} requests with 429")
    check(
        report["sandbox_max_per_second"] <= args.max_per_second,
        f"the sandbox saw {report['sandbox_max_per_second']} requests in one second, over the budget {args.max_per_second}",
    )
    print(json.dumps(report))
    return 0


def first_check_failure(error: BaseException) -> CheckFailed | None:
    """The CheckFailed inside an error, which anyio may have wrapped in exception groups."""
    if isinstance(error, CheckFailed):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = first_check_failure(inner)
            if found is not None:
                return found
    return None


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except BaseException as e:  # noqa: BLE001 - report a failed check plainly, re-raise the rest
        failure = first_check_failure(e)
        if failure is None:
            raise
        print(f"CHECK FAILED: {failure}", file=sys.stderr)
        sys.exit(1)

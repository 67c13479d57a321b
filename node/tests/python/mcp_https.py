"""The official MCP Python SDK (`mcp` on PyPI) against a Quire node serving HTTPS.

Usage: python mcp_https.py CLIENT_JSON CA_PEM

CLIENT_JSON is the `client.json` of a `quire serve --sandbox` node with TLS files; CA_PEM the
CA that signed its certificate. The script checks that a client trusting only the system's
CAs is refused, then connects with one trusting CA_PEM (TLS 1.3), lists the tools and calls
two of them in a session and statelessly. It prints one JSON object and exits non-zero on
the first failed check.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

TIMEOUT_S = 60.0


class CheckFailed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def text_of(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def main() -> int:
    client_json, ca_pem = sys.argv[1], sys.argv[2]
    with open(client_json) as f:
        conf = json.load(f)
    url, token = conf["mcp_url"], conf["token"]
    check(url.startswith("https://"), f"the node's URL is not https: {url}")
    base = url.removesuffix("/mcp")
    report: dict[str, Any] = {}

    # The system's CAs do not include the test CA: the handshake fails.
    try:
        async with httpx2.AsyncClient(timeout=30.0) as http:
            await http.get(f"{base}/healthz")
        raise CheckFailed("a client without the CA reached the node")
    except httpx2.ConnectError as e:
        report["untrusted_refused"] = "CERTIFICATE_VERIFY_FAILED" in str(e) or "certificate" in str(e).lower()
        check(report["untrusted_refused"], f"unexpected failure without the CA: {e}")

    context = ssl.create_default_context(cafile=ca_pem)
    async with httpx2.AsyncClient(verify=context, timeout=30.0) as http:
        r = await http.get(f"{base}/healthz")
        check(r.status_code == 200, f"/healthz answered {r.status_code}")

    def connect(mode: str) -> Client:
        http = httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {token}"}, verify=context, timeout=TIMEOUT_S
        )
        return Client(streamable_http_client(url, http_client=http), mode=mode)

    async with connect("legacy") as client:
        report["legacy_protocol_version"] = client.protocol_version
        listing = await client.list_tools()
        report["tools"] = len(listing.tools)
        check(len(listing.tools) >= 15, f"only {len(listing.tools)} tools")
        result = await client.call_tool("notion-get-self", {}, read_timeout_seconds=TIMEOUT_S)
        check(not result.is_error, f"notion-get-self failed: {text_of(result)[:300]}")
        result = await client.call_tool(
            "notion-search", {"query": "", "filter": "page", "page_size": 5}, read_timeout_seconds=TIMEOUT_S
        )
        check(not result.is_error, f"notion-search failed: {text_of(result)[:300]}")

    async with connect("2026-07-28") as client:
        result = await client.call_tool("notion-get-self", {}, read_timeout_seconds=TIMEOUT_S)
        check(not result.is_error, f"stateless notion-get-self failed: {text_of(result)[:300]}")
        report["stateless_protocol_version"] = client.protocol_version

    print(json.dumps(report))
    return 0


def first_check_failure(error: BaseException) -> CheckFailed | None:
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
        failed = first_check_failure(e)
        if failed is None:
            raise
        print(f"check failed: {failed}", file=sys.stderr)
        sys.exit(1)

"""One MCP session across the nodes of a Quire cluster, with the official MCP Python SDK.

Usage: python mcp_sessions.py --nodes URL1,URL2,URL3 --token TOKEN --other-token TOKEN2

The SDK opens a session (`initialize`) on node 1. Its HTTP client sends every request to the
node the script chooses at that moment (the path and headers stay the same), so the same SDK
session then calls tools through node 2 and node 3. With plain JSON-RPC over httpx the
script checks that the session id is refused (404) with another principal's token on every
node, exactly as an unknown id is. It then prints {"phase": "restart"} and waits for a line
on stdin (the caller restarts node 1 meanwhile), calls tools through the restarted node 1 in
the same session, closes the session (the SDK's DELETE) and checks that no node serves it
any more. It prints one JSON object per phase and exits non-zero on the first failed check.
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

TIMEOUT_S = 60.0
PROTOCOL = "2025-06-18"


class CheckFailed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


class NodeRouter(httpx2.AsyncBaseTransport):
    """Sends each request to the currently chosen node, keeping path, query and headers."""

    def __init__(self, bases: list[str]) -> None:
        self.bases = [httpx2.URL(b) for b in bases]
        self.current = 0
        self.inner = httpx2.AsyncHTTPTransport()
        self.session_id: str | None = None
        # (node number, method, status) of every request the SDK sent.
        self.sent: list[tuple[int, str, int]] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        target = self.bases[self.current]
        request.url = request.url.copy_with(scheme=target.scheme, host=target.host, port=target.port)
        request.headers["host"] = f"{target.host}:{target.port}"
        response = await self.inner.handle_async_request(request)
        session_id = response.headers.get("mcp-session-id")
        if session_id:
            self.session_id = session_id
        self.sent.append((self.current + 1, request.method, response.status_code))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def text_of(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def call_ok(client: Client, name: str, args: dict) -> Any:
    result = await client.call_tool(name, args, read_timeout_seconds=TIMEOUT_S)
    check(not result.is_error, f"{name} failed: {text_of(result)[:500]}")
    return result


async def raw_call(base: str, token: str, session_id: str) -> tuple[int, str]:
    """A tools/call in session `session_id` as plain JSON-RPC; the status and the body."""
    async with httpx2.AsyncClient(timeout=TIMEOUT_S) as http:
        response = await http.post(
            f"{base}/mcp",
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json, text/event-stream",
                "Content-Type": "application/json",
                "Mcp-Session-Id": session_id,
                "Mcp-Protocol-Version": PROTOCOL,
            },
            json={
                "jsonrpc": "2.0",
                "id": 99,
                "method": "tools/call",
                "params": {"name": "notion-get-self", "arguments": {}},
            },
        )
        return response.status_code, response.text


async def run(nodes: list[str], token: str, other_token: str) -> None:
    router = NodeRouter(nodes)
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT_S, transport=router
    )
    opened = time.perf_counter()
    async with Client(streamable_http_client(f"{nodes[0]}/mcp", http_client=http), mode="legacy") as client:
        initialize_ms = round((time.perf_counter() - opened) * 1000, 1)
        session_id = router.session_id
        check(session_id is not None, "the initialize on node 1 returned no Mcp-Session-Id")
        check(
            any(n == 1 and m == "POST" and s == 200 for n, m, s in router.sent),
            f"the initialize was not answered by node 1: {router.sent}",
        )
        emit({"phase": "initialized", "node": 1, "session_id": session_id, "initialize_ms": initialize_ms})

        # The same SDK session, through node 2, then node 3.
        served = []
        timings = {}
        for index in (1, 2):
            router.current = index
            before = len(router.sent)
            # The first call restores the session on this node; the next finds it in memory.
            started = time.perf_counter()
            await call_ok(client, "notion-get-self", {})
            first_ms = round((time.perf_counter() - started) * 1000, 1)
            started = time.perf_counter()
            await call_ok(client, "notion-get-self", {})
            timings[index + 1] = {"first_call_ms": first_ms, "next_call_ms": round((time.perf_counter() - started) * 1000, 1)}
            result = await call_ok(client, "notion-search", {"query": ""})
            check(text_of(result) != "", f"notion-search through node {index + 1} said nothing")
            posts = [s for n, m, s in router.sent[before:] if m == "POST"]
            check(
                posts and all(n == index + 1 for n, m, s in router.sent[before:] if m == "POST"),
                f"calls did not go through node {index + 1}: {router.sent[before:]}",
            )
            served.append(index + 1)
        emit({"phase": "continued", "nodes": served, "timings": timings})

        # Another principal's valid token with this session id: refused on every node, the
        # same 404 as an id that does not exist.
        refused = {}
        for number, base in enumerate(nodes, start=1):
            status, body = await raw_call(base, other_token, session_id)
            check(status == 404, f"node {number} answered {status} to another principal: {body[:300]}")
            refused[number] = status
        status, _ = await raw_call(nodes[1], token, "no-such-session-0123456789")
        check(status == 404, f"an unknown session id got {status}, not 404")
        # The owner still gets through on a node the SDK never used for it directly.
        status, body = await raw_call(nodes[2], token, session_id)
        check(status == 200 and '"isError":false' in body.replace(" ", ""), f"the owner's raw call: {status} {body[:300]}")
        emit({"phase": "bound", "refused": refused})

        # Node 1 restarts; the session goes on there.
        emit({"phase": "restart"})
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        check(line.strip() == "go", f"expected 'go' on stdin, got {line!r}")
        router.current = 0
        before = len(router.sent)
        await call_ok(client, "notion-get-self", {})
        await call_ok(client, "notion-search", {"query": ""})
        check(
            any(n == 1 and m == "POST" and s == 200 for n, m, s in router.sent[before:]),
            f"no call was served by the restarted node 1: {router.sent[before:]}",
        )
        emit({"phase": "restarted", "node": 1})
        router.current = 1
    # Leaving the client sent DELETE (through node 2): no node serves the session any more.
    deletes = [(n, s) for n, m, s in router.sent if m == "DELETE"]
    check(deletes and all(s in (200, 202, 204) for _, s in deletes), f"DELETE: {deletes}")
    gone = {}
    for number, base in enumerate(nodes, start=1):
        status, body = await raw_call(base, token, session_id)
        check(status == 404, f"node {number} still serves the closed session: {status} {body[:300]}")
        gone[number] = status
    await http.aclose()
    emit({"phase": "closed", "gone": gone, "requests": len(router.sent)})


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--other-token", required=True)
    args = parser.parse_args()
    try:
        asyncio.run(run(args.nodes.split(","), args.token, args.other_token))
    except CheckFailed as e:
        emit({"phase": "failed", "error": str(e)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""qpext's own HTTP/1.1 server and client, on raw sockets: framing, limits, timeouts, keep-alive."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from qpext import httpserver
from qpext.httpclient import FetchError, Upstream
from qpext.httpserver import HttpServer, Request, Response

Reply = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def server() -> AsyncIterator[tuple[HttpServer, int]]:
    async def handle(request: Request) -> Response:
        if request.headers.get("x-wait"):
            await asyncio.sleep(float(request.headers["x-wait"]))
        return Response(200, [b"hello ", request.method.encode(), b"\n"])

    http = HttpServer({"/metrics": handle})
    port = await http.start("127.0.0.1", 0)
    yield http, port
    await http.shutdown(1.0)


async def exchange(port: int, data: bytes, *, until_closed: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        if until_closed:
            return await asyncio.wait_for(reader.read(), 10)
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


async def test_keep_alive_pipelining_and_head(server: tuple[HttpServer, int]) -> None:
    _, port = server
    out = await exchange(
        port,
        b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"HEAD /metrics HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    answers = out.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 3
    assert answers[0].endswith(b"Content-Length: 10\r\n\r\nhello GET\n")
    assert answers[1].endswith(b"Content-Length: 11\r\n\r\n")
    assert b"Connection: close\r\n\r\nhello GET\n" in answers[2]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /other HTTP/1.1\r\nConnection: close\r\n\r\n", b"404"),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab", b"405"),
        (b"GET /metrics\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/2.0\r\n\r\n", b"505"),
        (b"GET /metrics HTTP/1.1\r\nbad header\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"501"),
        (b"GET /metrics HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", b"413"),
        (b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 70_000, b"431"),
    ],
)
async def test_bad_requests_get_a_status_and_a_close(
    server: tuple[HttpServer, int], request_bytes: bytes, status: bytes
) -> None:
    out = await exchange(server[1], request_bytes)
    assert out.startswith(b"HTTP/1.1 " + status)


async def test_idle_and_slow_head_connections_are_closed(
    server: tuple[HttpServer, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(httpserver, "IDLE_TIMEOUT", 0.2)
    monkeypatch.setattr(httpserver, "HEAD_TIMEOUT", 0.2)
    # Nothing sent, and half a request head: both closed without an answer.
    assert await exchange(server[1], b"") == b""
    assert await exchange(server[1], b"GET /metrics HTTP/1.1\r\n") == b""


async def test_connections_are_capped(
    server: tuple[HttpServer, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(httpserver, "MAX_CONNECTIONS", 1)
    _, first = await asyncio.open_connection("127.0.0.1", server[1])
    try:
        out = await exchange(server[1], b"GET /metrics HTTP/1.1\r\n\r\n")
    finally:
        first.close()
    assert out.startswith(b"HTTP/1.1 503")


async def test_shutdown_finishes_answers_and_closes_idle_connections(server: tuple[HttpServer, int]) -> None:
    http, port = server
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
    busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", port)
    busy_writer.write(b"GET /metrics HTTP/1.1\r\nX-Wait: 0.3\r\n\r\n")
    await asyncio.sleep(0.1)
    await http.shutdown(5.0)
    assert await asyncio.wait_for(idle_reader.read(), 5) == b""
    answer = await asyncio.wait_for(busy_reader.read(), 5)
    assert answer.startswith(b"HTTP/1.1 200")
    assert b"Connection: close" in answer
    assert answer.endswith(b"hello GET\n")
    idle_writer.close()
    busy_writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def serve(reply: Reply) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reply(reader, writer)
        finally:
            writer.close()

    upstream = await asyncio.start_server(handle, "127.0.0.1", 0)
    return upstream, int(upstream.sockets[0].getsockname()[1])


async def get_once(client: Upstream, max_bytes: int = 1 << 20) -> bytes:
    chunks: list[bytes] = []
    await asyncio.wait_for(client.get("/m", {}, lambda status, headers: chunks.append, max_bytes), 10)
    return b"".join(chunks)


async def fetch(port: int, max_bytes: int = 1 << 20) -> bytes:
    client = Upstream("127.0.0.1", port)
    try:
        return await get_once(client, max_bytes)
    finally:
        client.close()


def answer(head: bytes, body: bytes = b"") -> Reply:
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head + body)
        await writer.drain()

    return reply


async def test_client_reads_chunked_gzip_and_close_delimited_bodies() -> None:
    body = b"a_metric 1\n" * 1000
    packed = gzip.compress(body)
    chunked = (
        b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (packed[:100], packed[100:])) + b"0\r\nX: y\r\n\r\n"
    )
    cases = [
        answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n", chunked),
        answer(b"HTTP/1.0 200 OK\r\n\r\n", body),
        answer(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body), body),
    ]
    for reply in cases:
        upstream, port = await serve(reply)
        try:
            assert await fetch(port) == body
        finally:
            upstream.close()


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (answer(b"garbage\r\n\r\n"), "invalid_response"),
        (answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", b"short"), "connection"),
        (answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"), "body_too_large"),
        (answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"zz\r\n"), "invalid_response"),
        (answer(b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\n\r\n"), "invalid_response"),
        (
            answer(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"1000\r\n" + b"x" * 4096 + b"\r\n"
            ),
            "body_too_large",
        ),
    ],
)
async def test_client_failures_have_a_reason(reply: Reply, reason: str) -> None:
    upstream, port = await serve(reply)
    try:
        with pytest.raises(FetchError) as caught:
            await fetch(port, max_bytes=1000)
    finally:
        upstream.close()
    assert caught.value.reason == reason


async def test_client_reuses_connections_and_retries_one_the_server_closed() -> None:
    connections = 0

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        for _ in range(2):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            await writer.drain()
        # The connection is closed after two answers: the third request finds it closed.

    upstream, port = await serve(reply)
    client = Upstream("127.0.0.1", port)
    try:
        for _ in range(3):
            assert await get_once(client) == b"ok\n"
    finally:
        client.close()
        upstream.close()
    assert connections == 2

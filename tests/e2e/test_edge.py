"""The HTTP edge of a real ``dbpool serve``: auth decided before the body, bounded bodies and
headers, 413 envelopes every client reads, the concurrency limit and protected mode."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time

import httpx
import psutil

from tests.e2e.conftest import StartServer
from tests.support.server import DbpoolServer

CONNECTIONS = "/api/external-db-connections"
MIB = 1024 * 1024
KEYS = {
    "DBPOOL_API_KEY": secrets.token_urlsafe(24),
    "DBPOOL_ADMIN_API_KEY": secrets.token_urlsafe(24),
}
ADMIN = {"Authorization": f"Bearer {KEYS['DBPOOL_ADMIN_API_KEY']}"}


def _raw(server: DbpoolServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body, read off a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def _post_head(length: int, token: str | None = None, path: str = CONNECTIONS) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: dbpool\r\nContent-Type: application/json\r\n"
        f"{auth}Content-Length: {length}\r\n\r\n"
    ).encode()


def test_unauthenticated_body_is_refused_from_the_headers_before_it_is_sent(
    start_server: StartServer,
) -> None:
    server = start_server(env=KEYS)
    assert server.process is not None
    rss_before = psutil.Process(server.process.pid).memory_info().rss
    for _ in range(5):
        with _raw(server) as sock:
            sock.sendall(_post_head(MIB))  # the 1 MiB body is never sent
            status, headers, body = _read_response(sock)
        assert status == 401, body
        envelope = json.loads(body)
        assert envelope["error"]["code"] == "UNAUTHORIZED"
        assert envelope["requestId"] == headers["x-request-id"]
    # Sent in full, five unauthenticated 1 MiB bodies are read and dropped, never parsed.
    junk = b"[" + b"1," * (MIB // 2 - 1) + b"1]"
    with server.client() as http:
        for _ in range(5):
            refused = http.post(CONNECTIONS, content=junk,
                                headers={"Content-Type": "application/json"})
            assert refused.status_code == 401, refused.text
    grew = psutil.Process(server.process.pid).memory_info().rss - rss_before
    assert grew < 8 * MIB, f"the server grew {grew} bytes on refused bodies"


def test_oversized_body_gets_the_413_envelope_in_httpx_curl_and_node(
    start_server: StartServer,
) -> None:
    server = start_server(env=KEYS)
    body = b'{"name": "' + b"x" * (10 * 1000 * 1000) + b'"}'
    with server.client() as http:
        response = http.post(CONNECTIONS, content=body, headers=ADMIN)
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
        # The connection is still usable after the drain.
        assert http.get("/healthz").status_code == 200
    payload = server.workdir / "big.json"
    payload.write_bytes(body)
    curl = subprocess.run(
        ["curl", "-sS", "-X", "POST", "--data-binary", f"@{payload}",
         "-H", "Content-Type: application/json",
         "-H", f"Authorization: {ADMIN['Authorization']}",
         "-w", "\n%{http_code}", f"{server.base_url}{CONNECTIONS}"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    text, _, code = curl.stdout.rpartition("\n")
    assert code == "413", curl.stdout + curl.stderr
    assert json.loads(text)["error"]["code"] == "PAYLOAD_TOO_LARGE"
    script = (
        "const body = require('fs').readFileSync(process.argv[1]);"
        "fetch(process.argv[2], {method: 'POST', body, headers: {'content-type': "
        "'application/json', authorization: process.argv[3]}})"
        ".then(async r => console.log(r.status, await r.text()))"
        ".catch(e => { console.log('error', e.cause ?? e); process.exit(1); });"
    )
    node = subprocess.run(
        ["node", "-e", script, str(payload), f"{server.base_url}{CONNECTIONS}",
         ADMIN["Authorization"]],
        capture_output=True, text=True, timeout=30, check=False,
    )
    status, _, text = node.stdout.strip().partition(" ")
    assert status == "413", node.stdout + node.stderr
    assert json.loads(text)["error"]["code"] == "PAYLOAD_TOO_LARGE"


def test_slow_body_is_cut_after_the_read_timeout_and_its_slot_freed(
    start_server: StartServer,
) -> None:
    server = start_server(env={**KEYS, "DBPOOL_BODY_TIMEOUT_SECONDS": "1",
                               "DBPOOL_LIMIT_CONCURRENCY": "3"})
    sock = _raw(server)
    sock.sendall(_post_head(100, KEYS["DBPOOL_ADMIN_API_KEY"]) + b'{"name": ')
    began = time.monotonic()
    status, headers, body = _read_response(sock)
    assert status == 408, body
    assert json.loads(body)["error"]["code"] == "REQUEST_TIMEOUT"
    assert headers["connection"] == "close"
    assert _closed_by_server(sock, within=5)
    assert time.monotonic() - began < 5
    sock.close()
    with server.client() as http:  # every slot is free again
        for _ in range(4):
            assert http.get(CONNECTIONS, headers=ADMIN).status_code == 200


def test_slow_headers_are_cut_and_the_concurrency_limit_holds(
    start_server: StartServer,
) -> None:
    server = start_server(env={"DBPOOL_KEEP_ALIVE_SECONDS": "2", "DBPOOL_LIMIT_CONCURRENCY": "3"})
    dribblers = [_raw(server) for _ in range(3)]
    try:
        for sock in dribblers:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: dbp")  # and never the rest
        time.sleep(0.3)
        with server.client() as http:
            assert http.get("/healthz").status_code == 503, "limit_concurrency is not applied"
        for sock in dribblers:
            assert _closed_by_server(sock, within=5), "a slow-headers client was never cut"
        with server.client() as http:
            assert http.get("/healthz").status_code == 200
    finally:
        for sock in dribblers:
            sock.close()


def test_oversized_headers_are_refused_with_431(start_server: StartServer) -> None:
    server = start_server()
    filler = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"a" * 1000) for i in range(100))
    reply = b""
    with _raw(server) as sock:
        # 100 KiB of headers, past the 64 KiB limit. The server answers 431 and closes with
        # the rest unread, so the client may see the answer or, as the kernel resets a socket
        # closed with unread data, a reset: either way the connection is cut.
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: dbpool\r\n" + filler)
            while chunk := sock.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
    assert reply == b"" or reply.startswith(b"HTTP/1.1 431 "), reply[:200]
    with server.client() as http:  # a normal request with a body is unaffected
        headers = {"X-Big": "b" * 30000}
        assert http.post(CONNECTIONS, json={"name": "x" * 200000}, headers=headers
                         ).status_code == 422


def _non_loopback_address() -> str:
    """This machine's own non-loopback IPv4 address: a connection to it from here arrives
    with that address as its source, which is what a remote client looks like."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return str(address.address)
    raise AssertionError("this machine has no non-loopback IPv4 address to test from")


def test_protected_mode_answers_only_loopback_until_told_otherwise(
    start_server: StartServer,
) -> None:
    address = _non_loopback_address()
    server = start_server(env={"DBPOOL_HOST": "0.0.0.0"})
    remote = f"http://{address}:{server.port}"
    with httpx.Client(timeout=10) as http:
        refused = http.get(f"{remote}{CONNECTIONS}")
        assert refused.status_code == 403, refused.text
        message = refused.json()["error"]["message"]
        assert "DBPOOL_API_KEY" in message and "DBPOOL_ALLOW_UNAUTHENTICATED_REMOTE" in message
        assert http.post(f"{remote}{CONNECTIONS}", json={}).status_code == 403
        assert http.get(f"{remote}/healthz").status_code == 200  # probes stay public
        assert http.get(f"{server.base_url}{CONNECTIONS}").status_code == 200  # loopback
    assert "protected mode" in server.log()
    opened = start_server(env={"DBPOOL_HOST": "0.0.0.0",
                               "DBPOOL_ALLOW_UNAUTHENTICATED_REMOTE": "true"})
    with httpx.Client(timeout=10) as http:
        assert http.get(f"http://{address}:{opened.port}{CONNECTIONS}").status_code == 200
    keyed = start_server(env={"DBPOOL_HOST": "0.0.0.0", **KEYS})
    with httpx.Client(timeout=10) as http:
        url = f"http://{address}:{keyed.port}{CONNECTIONS}"
        assert http.get(url).status_code == 401
        assert http.get(url, headers=ADMIN).status_code == 200

#!/usr/bin/env python3
"""Check Pylon's /ws/echo endpoint with the `websockets` client.

Usage: echo_client.py [--compression {none,deflate,expect-none}]
[--ca-file PEM | --insecure] URL, where URL is http://127.0.0.1:PORT or the full
ws://127.0.0.1:PORT/ws/echo, or https:// and wss:// for a TLS server. Exits 0
when every check passes and 1 with the failed check on stderr otherwise.

For wss:// the server certificate is verified against the system roots, or
against the CA certificates in --ca-file. --insecure skips verification.

With --compression deflate the client offers permessage-deflate and requires
the server to accept it. With expect-none it offers it and requires the server
to decline it. With none, the default, it offers no extension.
"""

import argparse
import asyncio
import os
import ssl
import sys

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.protocol import State

from loopback import UrlError, websocket_url

STEP_TIMEOUT = 10.0
MIB = 1024 * 1024


class CheckFailed(Exception):
    """A check whose result differs from the expected one."""


def describe(data: str | bytes) -> str:
    kind = "text" if isinstance(data, str) else "binary"
    size = len(data.encode()) if isinstance(data, str) else len(data)
    return f"{kind} message of {size} bytes"


async def check_echo(ws: ClientConnection, name: str, sent: str | bytes) -> None:
    await asyncio.wait_for(ws.send(sent), STEP_TIMEOUT)
    try:
        received = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
    except TimeoutError:
        raise CheckFailed(f"{name}: no echo within {STEP_TIMEOUT} s") from None
    if type(received) is not type(sent):
        raise CheckFailed(f"{name}: sent a {describe(sent)}, received a {describe(received)}")
    if received != sent:
        raise CheckFailed(f"{name}: echo of the {describe(sent)} differs from what was sent")
    print(f"ok: {name} ({describe(sent)})")


async def check_ping(ws: ClientConnection) -> None:
    pong_waiter = await ws.ping(b"pylon-ping")
    try:
        latency = await asyncio.wait_for(pong_waiter, STEP_TIMEOUT)
    except TimeoutError:
        raise CheckFailed(f"ping: no pong within {STEP_TIMEOUT} s") from None
    print(f"ok: ping answered by a pong in {latency * 1000:.1f} ms")


async def check_close(ws: ClientConnection) -> None:
    try:
        await asyncio.wait_for(ws.close(1000, "echo checks done"), STEP_TIMEOUT)
    except TimeoutError:
        raise CheckFailed(f"close: handshake not finished within {STEP_TIMEOUT} s") from None

    protocol = ws.protocol
    if protocol.close_sent is None or protocol.close_sent.code != 1000:
        raise CheckFailed(f"close: expected to have sent close code 1000, sent {protocol.close_sent}")
    if protocol.close_rcvd is None:
        raise CheckFailed("close: the server sent no close frame before closing TCP")
    if protocol.close_rcvd.code != 1000:
        raise CheckFailed(f"close: expected the server to echo code 1000, received {protocol.close_rcvd}")
    if protocol.close_rcvd_then_sent is not False:
        raise CheckFailed("close: expected the client's close frame to go first")
    if ws.state is not State.CLOSED:
        raise CheckFailed(f"close: expected state CLOSED after the handshake, found {ws.state.name}")
    print(f"ok: close handshake completed with code {protocol.close_rcvd.code} on both sides")


def check_extensions(ws: ClientConnection, mode: str) -> None:
    names = [extension.name for extension in ws.protocol.extensions]
    header = ws.response.headers.get("Sec-WebSocket-Extensions")
    if mode == "deflate" and names != ["permessage-deflate"]:
        raise CheckFailed(
            f"compression: expected permessage-deflate to be agreed, got {names} "
            f"(response header {header!r})"
        )
    if mode != "deflate" and names:
        raise CheckFailed(f"compression: expected no extension, got {names} ({header!r})")
    print(f"ok: extensions agreed: {header or 'none'}")


def tls_context(url: str, ca_file: str | None, insecure: bool) -> ssl.SSLContext | None:
    """Build the TLS context for a wss:// URL, or return None for ws://."""
    if not url.startswith("wss://"):
        return None
    context = ssl.create_default_context(cafile=ca_file)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def run(url: str, mode: str, tls: ssl.SSLContext | None) -> int:
    # compression=None keeps frames plain, so that the checks cover framing alone. The
    # websockets default offer is permessage-deflate with 12-bit windows both ways.
    compression = None if mode == "none" else "deflate"
    async with connect(
        url, compression=compression, max_size=4 * MIB, open_timeout=STEP_TIMEOUT, ssl=tls
    ) as ws:
        print(f"connected to {url}")
        check_extensions(ws, mode)
        await check_echo(ws, "ASCII text", "hello, pylon")
        await check_echo(ws, "multi-byte UTF-8 text", "héllo wörld, 日本語, 🚀🛰️")
        await check_echo(ws, "binary", bytes(range(256)))
        await check_echo(ws, "empty text", "")
        await check_echo(ws, "empty binary", b"")
        await check_echo(ws, "1 MiB binary", os.urandom(MIB))
        # 4-byte characters make frame and read boundaries likely to split a code point.
        await check_echo(ws, "1 MiB UTF-8 text", "ab🚀" * (MIB // 6))
        # Repeated text compresses well, and the repeat tests context takeover.
        repeated = "the same compressible line of text, again and again\n" * 2000
        await check_echo(ws, "compressible text", repeated)
        await check_echo(ws, "the same compressible text again", repeated)
        await check_echo(ws, "1 MiB of zeros", bytes(MIB))
        await check_ping(ws)
        await check_close(ws)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Check Pylon's WebSocket echo endpoint.")
    parser.add_argument("url", help="server URL on loopback, e.g. http://127.0.0.1:8080")
    parser.add_argument(
        "--compression",
        choices=["none", "deflate", "expect-none"],
        default="none",
        help="none: offer no compression (default); deflate: offer permessage-deflate and "
        "require it; expect-none: offer it and require the server to decline",
    )
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument(
        "--ca-file", help="PEM file of CA certificates to trust for a wss:// server"
    )
    trust.add_argument(
        "--insecure",
        action="store_true",
        help="skip certificate verification for a wss:// server (development only)",
    )
    args = parser.parse_args()

    try:
        url = websocket_url(args.url, "/ws/echo")
        asyncio.run(run(url, args.compression, tls_context(url, args.ca_file, args.insecure)))
    except UrlError as error:
        print(f"echo_client: {error}", file=sys.stderr)
        return 2
    except CheckFailed as error:
        print(f"echo_client: FAILED: {error}", file=sys.stderr)
        return 1
    except (OSError, InvalidHandshake) as error:
        print(f"echo_client: FAILED: cannot connect to {args.url}: {error!r}", file=sys.stderr)
        return 1
    except TimeoutError:
        print(f"echo_client: FAILED: timed out waiting for {args.url}", file=sys.stderr)
        return 1
    except ConnectionClosed as error:
        print(f"echo_client: FAILED: connection closed early: {error}", file=sys.stderr)
        return 1
    print("echo_client: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

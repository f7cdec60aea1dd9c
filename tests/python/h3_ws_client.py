#!/usr/bin/env python3
"""Check a WebSocket echo endpoint over HTTP/3 (RFC 9220) with aioquic.

Usage: h3_ws_client.py --port PORT [--host HOST] [--path /ws/echo]

Connects with QUIC to HOST:PORT (127.0.0.1 by default) without verifying the
certificate, since the server under test uses a self-signed one, and on one
connection:
  - rejects CONNECT with :protocol other than websocket (expects 400) and
    Sec-WebSocket-Version 12 (expects 426 with Sec-WebSocket-Version: 13),
  - opens two WebSockets and checks echoes of text, a 200 KB binary message,
    a fragmented message and a ping,
  - closes one with 1000 and expects a 1000 close frame and the stream's end.
Exits 0 when every check passes and 1 with the failed check on stderr.
"""

import argparse
import asyncio
import ssl
import struct
import sys

from aioquic.asyncio import connect
from aioquic.h3.connection import H3_ALPN
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration

from h3_websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    H3Protocol,
    Stream,
    Tunnel,
    encode_frame,
)

STEP_TIMEOUT = 10.0


class CheckFailed(Exception):
    """A check whose result differs from the expected one."""


async def open_connect(
    protocol: H3Protocol, authority: str, path: str, ws_protocol: str, version: str
) -> tuple[int, dict, Tunnel]:
    stream_id = protocol._quic.get_next_available_stream_id()
    protocol.streams[stream_id] = Stream()
    headers = [
        (b":method", b"CONNECT"),
        (b":protocol", ws_protocol.encode()),
        (b":scheme", b"https"),
        (b":authority", authority.encode()),
        (b":path", path.encode()),
        (b"sec-websocket-version", version.encode()),
    ]
    protocol.send_headers(stream_id, headers)
    event = await asyncio.wait_for(protocol.streams[stream_id].events.get(), STEP_TIMEOUT)
    if not isinstance(event, HeadersReceived):
        raise CheckFailed(f"expected response headers, got {event!r}")
    fields = {name.decode(): value.decode() for name, value in event.headers}
    tunnel = Tunnel(protocol, stream_id, masked_input=False)
    if event.stream_ended:
        tunnel.ended = True
    return int(fields[":status"]), fields, tunnel


async def expect_frame(tunnel: Tunnel, opcode: int, payload: bytes, what: str) -> None:
    frame = await tunnel.read_frame(STEP_TIMEOUT)
    if frame is None:
        raise CheckFailed(f"{what}: stream ended before the reply")
    fin, got_opcode, got_payload = frame
    if not fin or got_opcode != opcode or got_payload != payload:
        raise CheckFailed(
            f"{what}: expected opcode {opcode} with {len(payload)} bytes, got fin={fin} "
            f"opcode {got_opcode} with {len(got_payload)} bytes"
        )


async def run_checks(host: str, port: int, path: str) -> None:
    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    configuration.verify_mode = ssl.CERT_NONE
    authority = f"localhost:{port}"
    async with connect(
        host, port, configuration=configuration, create_protocol=H3Protocol
    ) as protocol:
        status, _, _ = await open_connect(protocol, authority, path, "chat", "13")
        if status != 400:
            raise CheckFailed(f":protocol chat: expected 400, got {status}")
        status, fields, _ = await open_connect(protocol, authority, path, "websocket", "12")
        if status != 426 or fields.get("sec-websocket-version") != "13":
            raise CheckFailed(f"version 12: expected 426 with version 13, got {status} {fields}")

        status, _, first = await open_connect(protocol, authority, path, "websocket", "13")
        if status != 200:
            raise CheckFailed(f"first WebSocket: expected 200, got {status}")
        status, _, second = await open_connect(protocol, authority, path, "websocket", "13")
        if status != 200:
            raise CheckFailed(f"second WebSocket: expected 200, got {status}")

        first.write(encode_frame(OP_TEXT, b"hello over HTTP/3"))
        big = bytes(i % 251 for i in range(200_000))
        second.write(encode_frame(OP_BINARY, big))
        await expect_frame(first, OP_TEXT, b"hello over HTTP/3", "text echo")
        await expect_frame(second, OP_BINARY, big, "200 KB binary echo")

        first.write(encode_frame(OP_TEXT, b"frag", fin=False))
        first.write(encode_frame(OP_CONTINUATION, b"ment"))
        await expect_frame(first, OP_TEXT, b"fragment", "fragmented message echo")

        second.write(encode_frame(OP_PING, b"are you there"))
        await expect_frame(second, OP_PONG, b"are you there", "pong")

        first.write(encode_frame(OP_CLOSE, struct.pack("!H", 1000) + b"done"))
        frame = await first.read_frame(STEP_TIMEOUT)
        if frame is None or frame[1] != OP_CLOSE or frame[2][:2] != struct.pack("!H", 1000):
            raise CheckFailed(f"close: expected a 1000 close frame, got {frame!r}")
        first.write(b"", end_stream=True)
        if await first.read_frame(STEP_TIMEOUT) is not None:
            raise CheckFailed("close: data after the close frame")

        # The other WebSocket still works after the first one closed.
        second.write(encode_frame(OP_TEXT, b"still open"))
        await expect_frame(second, OP_TEXT, b"still open", "echo after the other closed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="server UDP port")
    parser.add_argument("--path", default="/ws/echo", help="echo path (default /ws/echo)")
    args = parser.parse_args()
    try:
        asyncio.run(run_checks(args.host, args.port, args.path))
    except (CheckFailed, ConnectionError, asyncio.TimeoutError) as error:
        print(f"h3_ws_client: check failed: {error!r}", file=sys.stderr)
        return 1
    print("h3_ws_client: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

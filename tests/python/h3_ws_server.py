#!/usr/bin/env python3
"""Run an HTTP/3 WebSocket echo server (RFC 9220) on 127.0.0.1 with aioquic, for
testing Pylon's HTTP/3 client.

Usage: h3_ws_server.py --cert PEM --key PEM [--port 0] [--lifetime 120]

Prints `READY <port>` on stdout once it listens (with --port 0 the port is chosen
by the OS). Every extended CONNECT with :protocol websocket and
Sec-WebSocket-Version 13 gets 200, on any path; other requests get 400. Each
whole text or binary message is sent back as one frame, fragmented ones
reassembled; pings get pongs; a close frame gets a close frame with the same
code and then the stream ends. An unmasked or malformed frame gets close 1002.
The server offers no permessage-deflate, so compression offers are declined.
It stops after --lifetime seconds, or on SIGTERM or SIGINT.
"""

import argparse
import asyncio
import logging
import signal
import struct
import sys

from aioquic.asyncio import serve
from aioquic.h3.connection import H3_ALPN
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamReset

from h3_websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameError,
    H3Protocol,
    Tunnel,
    encode_frame,
)

log = logging.getLogger("h3_ws_server")

# How long a stream may stay silent before the server gives up on it, in seconds.
IDLE_TIMEOUT = 60.0


class EchoProtocol(H3Protocol):
    """Serves every new request stream with `serve_stream`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tasks = set()
        task = asyncio.ensure_future(self.accept_streams())
        self.tasks.add(task)

    async def accept_streams(self) -> None:
        while True:
            stream_id = await self.new_streams.get()
            task = asyncio.ensure_future(self.serve_stream(stream_id))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def serve_stream(self, stream_id: int) -> None:
        event = await self.streams[stream_id].events.get()
        if not isinstance(event, HeadersReceived):
            return
        fields = {name.decode(): value.decode() for name, value in event.headers}
        if (
            fields.get(":method") != "CONNECT"
            or fields.get(":protocol") != "websocket"
            or fields.get("sec-websocket-version") != "13"
        ):
            log.info("rejecting %s", fields)
            self.send_headers(stream_id, [(b":status", b"400")], end_stream=True)
            return
        self.send_headers(stream_id, [(b":status", b"200")])
        log.info("websocket opened on stream %d for %s", stream_id, fields.get(":path"))
        tunnel = Tunnel(self, stream_id, masked_input=True)
        try:
            await echo(tunnel)
        except (asyncio.TimeoutError, ConnectionError) as error:
            log.info("stream %d ended: %r", stream_id, error)


async def echo(tunnel: Tunnel) -> None:
    message_opcode = None
    fragments: list[bytes] = []
    while True:
        try:
            frame = await tunnel.read_frame(IDLE_TIMEOUT)
        except FrameError as error:
            log.info("protocol error: %s", error)
            tunnel.write(encode_frame(OP_CLOSE, struct.pack("!H", 1002), mask=False), end_stream=True)
            return
        if frame is None:
            return
        fin, opcode, payload = frame
        if opcode == OP_PING:
            tunnel.write(encode_frame(OP_PONG, payload, mask=False))
        elif opcode == OP_PONG:
            pass
        elif opcode == OP_CLOSE:
            code = payload[:2] if len(payload) >= 2 else struct.pack("!H", 1000)
            tunnel.write(encode_frame(OP_CLOSE, code, mask=False), end_stream=True)
            return
        elif opcode in (OP_TEXT, OP_BINARY) and message_opcode is None:
            message_opcode = opcode
            fragments = [payload]
        elif opcode == OP_CONTINUATION and message_opcode is not None:
            fragments.append(payload)
        else:
            tunnel.write(encode_frame(OP_CLOSE, struct.pack("!H", 1002), mask=False), end_stream=True)
            return
        if fin and message_opcode is not None and opcode in (OP_TEXT, OP_BINARY, OP_CONTINUATION):
            tunnel.write(encode_frame(message_opcode, b"".join(fragments), mask=False))
            message_opcode = None
            fragments = []


async def run(port: int, cert: str, key: str, lifetime: float) -> None:
    configuration = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    configuration.load_cert_chain(cert, key)
    server = await serve("127.0.0.1", port, configuration=configuration, create_protocol=EchoProtocol)
    bound_port = server._transport.get_extra_info("sockname")[1]
    print(f"READY {bound_port}", flush=True)
    log.info("listening on 127.0.0.1:%d", bound_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), lifetime)
        log.info("stopping on signal")
    except asyncio.TimeoutError:
        log.info("stopping after %.0f s", lifetime)
    server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="UDP port; 0 lets the OS pick one")
    parser.add_argument("--cert", required=True, help="PEM certificate chain")
    parser.add_argument("--key", required=True, help="PEM private key")
    parser.add_argument("--lifetime", type=float, default=120.0, help="seconds to run (default 120)")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    asyncio.run(run(args.port, args.cert, args.key, args.lifetime))
    return 0


if __name__ == "__main__":
    sys.exit(main())

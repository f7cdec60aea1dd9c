#!/usr/bin/env python3
"""Run a `websockets` echo server on 127.0.0.1 for testing Pylon's client.

Prints `READY <port>` on stdout once it listens (with --port 0 the port is
chosen by the OS) and exits 0 on SIGTERM or SIGINT. Every text or binary
message is sent back unchanged. The library replies to each ping with a pong
and to a close frame with a close frame, as RFC 6455 requires.
"""

import argparse
import asyncio
import logging
import signal
import sys

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

DEFAULT_MAX_SIZE = 16 * 1024 * 1024

log = logging.getLogger("echo_server")


async def echo(ws: ServerConnection) -> None:
    peer = ws.remote_address
    log.info("connection opened from %s", peer)
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed as error:
        log.info("connection from %s closed with an error: %s", peer, error)
        return
    log.info("connection from %s closed: code %s", peer, ws.close_code)


async def run(port: int, max_size: int, compression: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    # compression=None keeps frames uncompressed even when the client offers
    # permessage-deflate, and "deflate" accepts it with the websockets defaults.
    # ping_interval=None turns off this server's keepalive pings.
    async with serve(
        echo,
        "127.0.0.1",
        port,
        compression=compression,
        max_size=max_size,
        ping_interval=None,
    ) as server:
        bound_port = server.sockets[0].getsockname()[1]
        print(f"READY {bound_port}", flush=True)
        log.info("listening on 127.0.0.1:%d", bound_port)
        await stop.wait()
        log.info("stopping on signal")


def main() -> int:
    parser = argparse.ArgumentParser(description="WebSocket echo server on 127.0.0.1.")
    parser.add_argument(
        "--port",
        type=int,
        required=True,
        help="TCP port to listen on; 0 lets the OS pick one (printed on the READY line)",
    )
    parser.add_argument(
        "--max-size",
        type=int,
        default=DEFAULT_MAX_SIZE,
        help=f"maximum incoming message size in bytes (default {DEFAULT_MAX_SIZE})",
    )
    parser.add_argument(
        "--compression",
        choices=["none", "deflate"],
        default="none",
        help="none: decline permessage-deflate (default); deflate: accept it",
    )
    args = parser.parse_args()
    if not 0 <= args.port <= 65535:
        parser.error(f"invalid --port {args.port}: expected 0 to 65535")

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        compression = None if args.compression == "none" else "deflate"
        asyncio.run(run(args.port, args.max_size, compression))
    except OSError as error:
        print(f"echo_server: failed to listen on 127.0.0.1:{args.port}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

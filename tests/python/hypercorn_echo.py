#!/usr/bin/env python3
"""Serve a WebSocket echo app with hypercorn on 127.0.0.1 for testing Pylon's client.

hypercorn serves WebSockets over HTTP/2 with extended CONNECT (RFC 8441): over TLS with
ALPN h2 when --certfile and --keyfile are given, and otherwise over plain TCP, where a
client that opens with the HTTP/2 preface gets HTTP/2 (prior knowledge).

Prints `READY <port>` on stdout once it listens on an OS-chosen port, and exits 0 on
SIGTERM or SIGINT. The app accepts every WebSocket, sends back each text and binary
message unchanged, and prints `CLOSED code=<code>` when a WebSocket ends.
"""

import argparse
import asyncio
import logging
import signal
import socket
import sys

from hypercorn.asyncio import serve
from hypercorn.config import Config

log = logging.getLogger("hypercorn_echo")


async def app(scope, receive, send):
    """ASGI app: echo on every WebSocket, 404 on plain HTTP requests."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"not found\n"})
        return

    log.info("websocket %s over HTTP/%s", scope["path"], scope.get("http_version"))
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.receive":
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
        elif message["type"] == "websocket.disconnect":
            print(f"CLOSED code={message.get('code')}", flush=True)
            return


async def run(certfile: str | None, keyfile: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    # The socket is bound here so the OS picks a free port that this script can print.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.set_inheritable(True)
    port = sock.getsockname()[1]

    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.certfile = certfile
    config.keyfile = keyfile
    config.alpn_protocols = ["h2"]
    config.accesslog = None
    config.graceful_timeout = 1.0
    server = asyncio.ensure_future(serve(app, config, shutdown_trigger=stop.wait))
    # hypercorn logs when it listens, but prints nothing to stdout, so give it a moment to
    # start accepting. Connections that arrive earlier wait in the listen backlog.
    await asyncio.sleep(0.2)
    print(f"READY {port}", flush=True)
    await server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--certfile", help="certificate chain PEM file, to serve TLS")
    parser.add_argument("--keyfile", help="private key PEM file of --certfile")
    args = parser.parse_args()
    if (args.certfile is None) != (args.keyfile is None):
        parser.error("--certfile and --keyfile must be given together")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(run(args.certfile, args.keyfile))
    return 0


if __name__ == "__main__":
    sys.exit(main())

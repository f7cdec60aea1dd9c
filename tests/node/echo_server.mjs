// Run a `ws` echo server on 127.0.0.1 for testing Pylon's client.
//
// Usage: node tests/node/echo_server.mjs --port N [--compress] [--max-payload BYTES]
//
// Prints `READY <port>` on stdout once it listens (with --port 0 the OS picks the port)
// and exits 0 on SIGTERM or SIGINT. Every text or binary message is sent back unchanged
// and with the same type. `ws` 8 replies to each ping with a pong and to a close frame
// with a close frame by default. When a connection ends, a line
// `CLOSED code=<code> clean=<true|false> reason=<JSON string>` on stdout reports the
// close code that the client sent and whether close frames went both ways.
// --compress accepts permessage-deflate when a client offers it; without it the server
// agrees to no extension.

import { parseArgs } from "node:util";

import { WebSocketServer } from "ws";

const DEFAULT_MAX_PAYLOAD = 16 * 1024 * 1024;

function log(message) {
  console.error(`${new Date().toISOString()} echo_server ${message}`);
}

function parseCommandLine() {
  const { values } = parseArgs({
    options: {
      port: { type: "string" },
      compress: { type: "boolean", default: false },
      "max-payload": { type: "string", default: String(DEFAULT_MAX_PAYLOAD) },
    },
  });
  if (values.port === undefined) {
    throw new Error("missing --port: expected a TCP port, or 0 to let the OS pick one");
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`invalid --port ${values.port}: expected 0 to 65535`);
  }
  const maxPayload = Number(values["max-payload"]);
  if (!Number.isInteger(maxPayload) || maxPayload <= 0) {
    throw new Error(`invalid --max-payload ${values["max-payload"]}: expected a positive number of bytes`);
  }
  return { port, compress: values.compress, maxPayload };
}

function echo(ws, request) {
  const peer = `${request.socket.remoteAddress}:${request.socket.remotePort}`;
  const extensions = ws.extensions === "" ? "none" : ws.extensions;
  log(`connection opened from ${peer}, extensions: ${extensions}`);
  ws.on("message", (data, isBinary) => {
    ws.send(data, { binary: isBinary });
  });
  ws.on("error", (error) => {
    log(`connection from ${peer} failed: ${error.message}`);
  });
  // The EventTarget form of the close event carries `wasClean`: true only when a close
  // frame was both sent and received.
  ws.addEventListener("close", (event) => {
    const reason = JSON.stringify(event.reason);
    console.log(`CLOSED code=${event.code} clean=${event.wasClean} reason=${reason}`);
    log(`connection from ${peer} closed: code ${event.code}`);
  });
}

function main() {
  let args;
  try {
    args = parseCommandLine();
  } catch (error) {
    console.error(`echo_server: ${error.message}`);
    process.exitCode = 2;
    return;
  }

  const server = new WebSocketServer({
    host: "127.0.0.1",
    port: args.port,
    perMessageDeflate: args.compress,
    maxPayload: args.maxPayload,
  });
  server.on("connection", echo);
  server.on("listening", () => {
    const { port } = server.address();
    console.log(`READY ${port}`);
    log(`listening on 127.0.0.1:${port}, permessage-deflate ${args.compress ? "on" : "off"}`);
  });
  server.on("error", (error) => {
    console.error(`echo_server: failed to listen on 127.0.0.1:${args.port}: ${error.message}`);
    process.exitCode = 1;
  });

  // The process exits by itself once the listener and every connection are closed.
  const stop = (signal) => {
    log(`stopping on ${signal}`);
    for (const client of server.clients) {
      client.terminate();
    }
    server.close();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main();

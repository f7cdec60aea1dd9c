// WebSockets over HTTP/2 (RFC 8441) with Node.js's own `http2` module, as a peer of Pylon.
//
// Usage:
//   node tests/node/h2_websocket.mjs server [--tls-cert PEM --tls-key PEM] [--no-connect-protocol]
//   node tests/node/h2_websocket.mjs client URL [--ca PEM] [--streams N]
//
// The server listens on 127.0.0.1 with an OS-chosen port, prints `READY <port>` on stdout
// and exits 0 on SIGTERM or SIGINT. It sends SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 unless
// --no-connect-protocol is given, responds to each extended CONNECT with `:protocol websocket`
// and `sec-websocket-version: 13` with 200, and echoes every text and binary message.
// It serves TLS with ALPN h2 when given a certificate, and HTTP/2 with prior knowledge
// otherwise.
//
// The client opens one HTTP/2 connection to URL (ws:// with prior knowledge, wss:// with
// ALPN h2), checks that the server's SETTINGS enable extended CONNECT, then opens N
// WebSockets (default 3) on it at once. On each it sends a text message, a 70000-byte
// binary message and a ping, checks the echoes and the pong, and closes with 1000. It
// prints `h2_client: all checks passed` and exits 0 when every check passed, and exits 1
// with the failed check otherwise.
//
// Node.js's http2 module carries the streams. The WebSocket frames on them (RFC 6455
// section 5) are encoded and decoded here, without extensions: the client offers no
// permessage-deflate and the server accepts none.

import { readFileSync } from "node:fs";
import http2 from "node:http2";
import { parseArgs } from "node:util";

const OPCODE_CONTINUATION = 0x0;
const OPCODE_TEXT = 0x1;
const OPCODE_BINARY = 0x2;
const OPCODE_CLOSE = 0x8;
const OPCODE_PING = 0x9;
const OPCODE_PONG = 0xa;

/** Largest message either side accepts, in bytes. */
const MAX_MESSAGE = 16 * 1024 * 1024;

/** Time limit of the whole client run, in milliseconds. */
const CLIENT_TIMEOUT_MS = 30_000;

function log(message) {
  console.error(`${new Date().toISOString()} h2_websocket ${message}`);
}

/** Encodes one final frame. A client masks it with a random key (RFC 6455 section 5.3). */
function encodeFrame(opcode, payload, masked) {
  const length = payload.length;
  let header;
  if (length < 126) {
    header = Buffer.from([0x80 | opcode, length]);
  } else if (length < 65536) {
    header = Buffer.alloc(4);
    header[0] = 0x80 | opcode;
    header[1] = 126;
    header.writeUInt16BE(length, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = 0x80 | opcode;
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(length), 2);
  }
  if (!masked) {
    return Buffer.concat([header, payload]);
  }
  header[1] |= 0x80;
  const key = Buffer.from([
    Math.floor(Math.random() * 256),
    Math.floor(Math.random() * 256),
    Math.floor(Math.random() * 256),
    Math.floor(Math.random() * 256),
  ]);
  const body = Buffer.alloc(length);
  for (let i = 0; i < length; i++) {
    body[i] = payload[i] ^ key[i % 4];
  }
  return Buffer.concat([header, key, body]);
}

/**
 * Decodes frames from a byte stream and joins fragments into messages. `expectMasked` is
 * true on the server, which requires masked frames, and false on the client, which
 * rejects them. Calls `onMessage(opcode, payload)` for each message and control frame.
 */
class FrameDecoder {
  constructor(expectMasked, onMessage) {
    this.expectMasked = expectMasked;
    this.onMessage = onMessage;
    this.buffer = Buffer.alloc(0);
    this.fragments = [];
    this.fragmentOpcode = null;
  }

  push(chunk) {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    for (;;) {
      const frame = this.nextFrame();
      if (frame === null) {
        return;
      }
      this.handle(frame);
    }
  }

  nextFrame() {
    const buffer = this.buffer;
    if (buffer.length < 2) {
      return null;
    }
    const fin = (buffer[0] & 0x80) !== 0;
    if ((buffer[0] & 0x70) !== 0) {
      throw new Error("frame has RSV bits set, but no extension was agreed");
    }
    const opcode = buffer[0] & 0x0f;
    const masked = (buffer[1] & 0x80) !== 0;
    if (masked !== this.expectMasked) {
      throw new Error(`frame masking is ${masked}, expected ${this.expectMasked}`);
    }
    let length = buffer[1] & 0x7f;
    let offset = 2;
    if (length === 126) {
      if (buffer.length < 4) {
        return null;
      }
      length = buffer.readUInt16BE(2);
      offset = 4;
    } else if (length === 127) {
      if (buffer.length < 10) {
        return null;
      }
      const long = buffer.readBigUInt64BE(2);
      if (long > BigInt(MAX_MESSAGE)) {
        throw new Error(`frame of ${long} bytes is larger than ${MAX_MESSAGE}`);
      }
      length = Number(long);
      offset = 10;
    }
    const keyLength = masked ? 4 : 0;
    if (buffer.length < offset + keyLength + length) {
      return null;
    }
    const key = buffer.subarray(offset, offset + keyLength);
    const payload = Buffer.from(buffer.subarray(offset + keyLength, offset + keyLength + length));
    if (masked) {
      for (let i = 0; i < payload.length; i++) {
        payload[i] ^= key[i % 4];
      }
    }
    this.buffer = buffer.subarray(offset + keyLength + length);
    return { fin, opcode, payload };
  }

  handle({ fin, opcode, payload }) {
    if (opcode >= 0x8) {
      if (!fin || payload.length > 125) {
        throw new Error(`invalid control frame: opcode ${opcode}, fin ${fin}, ${payload.length} bytes`);
      }
      this.onMessage(opcode, payload);
      return;
    }
    if (opcode === OPCODE_CONTINUATION) {
      if (this.fragmentOpcode === null) {
        throw new Error("continuation frame without a message to continue");
      }
    } else {
      if (this.fragmentOpcode !== null) {
        throw new Error("new data frame while a fragmented message is open");
      }
      this.fragmentOpcode = opcode;
    }
    this.fragments.push(payload);
    if (fin) {
      const message = Buffer.concat(this.fragments);
      const messageOpcode = this.fragmentOpcode;
      this.fragments = [];
      this.fragmentOpcode = null;
      if (messageOpcode === OPCODE_TEXT) {
        new TextDecoder("utf-8", { fatal: true }).decode(message);
      }
      this.onMessage(messageOpcode, message);
    }
  }
}

function closePayload(code, reason) {
  const reasonBytes = Buffer.from(reason, "utf8");
  const payload = Buffer.alloc(2 + reasonBytes.length);
  payload.writeUInt16BE(code, 0);
  reasonBytes.copy(payload, 2);
  return payload;
}

// ===== server =====

function runServer(values) {
  const settings = { enableConnectProtocol: !values["no-connect-protocol"] };
  const server = values["tls-cert"]
    ? http2.createSecureServer({
        cert: readFileSync(values["tls-cert"]),
        key: readFileSync(values["tls-key"]),
        settings,
      })
    : http2.createServer({ settings });

  server.on("stream", (stream, headers) => {
    const method = headers[":method"];
    const protocol = headers[":protocol"];
    if (method !== "CONNECT" || protocol !== "websocket") {
      stream.respond({ ":status": 400 });
      stream.end("expected an extended CONNECT with :protocol websocket\n");
      return;
    }
    if (headers["sec-websocket-version"] !== "13") {
      stream.respond({ ":status": 426, "sec-websocket-version": "13" });
      stream.end();
      return;
    }
    stream.respond({ ":status": 200 });
    log(`websocket open on stream ${stream.id} path ${headers[":path"]}`);
    let closeSent = false;
    const decoder = new FrameDecoder(true, (opcode, payload) => {
      if (opcode === OPCODE_TEXT || opcode === OPCODE_BINARY) {
        stream.write(encodeFrame(opcode, payload, false));
      } else if (opcode === OPCODE_PING) {
        stream.write(encodeFrame(OPCODE_PONG, payload, false));
      } else if (opcode === OPCODE_CLOSE) {
        const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
        console.log(`CLOSED stream=${stream.id} code=${code}`);
        if (!closeSent) {
          closeSent = true;
          stream.end(encodeFrame(OPCODE_CLOSE, payload.subarray(0, 2), false));
        }
      }
    });
    stream.on("data", (chunk) => {
      try {
        decoder.push(chunk);
      } catch (error) {
        log(`stream ${stream.id}: ${error.message}; closing with 1002`);
        if (!closeSent) {
          closeSent = true;
          stream.end(encodeFrame(OPCODE_CLOSE, closePayload(1002, ""), false));
        }
      }
    });
    stream.on("error", (error) => log(`stream ${stream.id} error: ${error.message}`));
  });

  server.listen(0, "127.0.0.1", () => {
    console.log(`READY ${server.address().port}`);
  });
  const stop = () => {
    server.close();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

// ===== client =====

/** Waits for the server's first SETTINGS frame and returns it. */
function remoteSettings(session) {
  return new Promise((resolve, reject) => {
    session.once("remoteSettings", resolve);
    session.once("error", reject);
  });
}

/** Opens one WebSocket on `session` and runs the echo checks on it. */
async function runWebSocket(session, url, index) {
  const stream = session.request({
    ":method": "CONNECT",
    ":protocol": "websocket",
    ":scheme": url.protocol === "wss:" ? "https" : "http",
    ":authority": url.host,
    ":path": url.pathname + url.search,
    "sec-websocket-version": "13",
  });
  const headers = await new Promise((resolve, reject) => {
    stream.once("response", resolve);
    stream.once("error", reject);
  });
  if (headers[":status"] !== 200) {
    throw new Error(`stream ${index}: expected status 200, got ${headers[":status"]}`);
  }
  if (headers["sec-websocket-extensions"] !== undefined) {
    throw new Error(`stream ${index}: server agreed to an extension that was not offered`);
  }

  const waiting = [];
  const received = [];
  const decoder = new FrameDecoder(false, (opcode, payload) => {
    received.push({ opcode, payload });
    while (waiting.length > 0 && received.length > 0) {
      waiting.shift()(received.shift());
    }
  });
  stream.on("data", (chunk) => decoder.push(chunk));
  const ended = new Promise((resolve) => stream.once("end", resolve));
  stream.resume();
  const next = () =>
    new Promise((resolve) => {
      if (received.length > 0) {
        resolve(received.shift());
      } else {
        waiting.push(resolve);
      }
    });
  const expect = async (opcode, payload, what) => {
    const message = await next();
    if (message.opcode !== opcode || !message.payload.equals(payload)) {
      throw new Error(
        `stream ${index}: ${what}: expected opcode ${opcode} with ${payload.length} bytes, ` +
          `got opcode ${message.opcode} with ${message.payload.length} bytes`,
      );
    }
  };

  const text = Buffer.from(`hello from node over h2, stream ${index}, ünïcödé`, "utf8");
  stream.write(encodeFrame(OPCODE_TEXT, text, true));
  await expect(OPCODE_TEXT, text, "text echo");

  const binary = Buffer.alloc(70_000, index);
  stream.write(encodeFrame(OPCODE_BINARY, binary, true));
  await expect(OPCODE_BINARY, binary, "binary echo");

  const ping = Buffer.from(`ping ${index}`);
  stream.write(encodeFrame(OPCODE_PING, ping, true));
  await expect(OPCODE_PONG, ping, "pong");

  stream.write(encodeFrame(OPCODE_CLOSE, closePayload(1000, "done"), true));
  const close = await next();
  if (close.opcode !== OPCODE_CLOSE || close.payload.readUInt16BE(0) !== 1000) {
    throw new Error(`stream ${index}: expected a close frame with 1000, got opcode ${close.opcode}`);
  }
  stream.end();
  await ended;
  log(`stream ${index}: all checks passed`);
}

async function runClient(url, values) {
  const options = {};
  if (values.ca) {
    options.ca = readFileSync(values.ca);
  }
  const authority = `${url.protocol === "wss:" ? "https" : "http"}://${url.host}`;
  const session = http2.connect(authority, options);
  const settings = await remoteSettings(session);
  if (settings.enableConnectProtocol !== true) {
    throw new Error("server SETTINGS do not enable extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL)");
  }
  const streams = Number(values.streams);
  const runs = [];
  for (let index = 0; index < streams; index++) {
    runs.push(runWebSocket(session, url, index));
  }
  await Promise.all(runs);
  session.close();
  console.log("h2_client: all checks passed");
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    "tls-cert": { type: "string" },
    "tls-key": { type: "string" },
    "no-connect-protocol": { type: "boolean", default: false },
    ca: { type: "string" },
    streams: { type: "string", default: "3" },
  },
});

if (positionals[0] === "server") {
  runServer(values);
} else if (positionals[0] === "client" && positionals[1] !== undefined) {
  const timer = setTimeout(() => {
    console.error(`h2_client: timed out after ${CLIENT_TIMEOUT_MS} ms`);
    process.exit(1);
  }, CLIENT_TIMEOUT_MS);
  runClient(new URL(positionals[1]), values).then(
    () => {
      clearTimeout(timer);
      process.exit(0);
    },
    (error) => {
      console.error(`h2_client: ${error.stack ?? error}`);
      process.exit(1);
    },
  );
} else {
  console.error("usage: h2_websocket.mjs server [...] | client URL [...]");
  process.exit(2);
}

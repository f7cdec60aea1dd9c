// Check Pylon's /ws/echo endpoint with the `ws` client.
//
// Usage: node tests/node/echo_client.mjs URL [--compress]
//
// URL is http://127.0.0.1:PORT or the full ws://127.0.0.1:PORT/ws/echo, on a loopback
// host. Without --compress the client offers no extension. With --compress it offers
// permessage-deflate and prints whether the server accepted the offer; a declined offer
// passes unless the environment variable PYLON_EXPECT_DEFLATE is 1.
// Exits 0 when every check passes, 1 with the failed check on stderr otherwise, and 2
// for invalid arguments.

import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";

import WebSocket from "ws";

import { UrlError, websocketUrl } from "./loopback.mjs";

const STEP_TIMEOUT_MS = 10_000;
// Upper bound of the whole run, so that a stuck peer cannot keep the process alive.
const RUN_TIMEOUT_MS = 120_000;
const KIB = 1024;
const MIB = 1024 * KIB;

/** A check whose result differs from the expected one. */
class CheckFailed extends Error {}

function describe(data, isBinary) {
  return `${isBinary ? "binary" : "text"} message of ${data.length} bytes`;
}

/** Rejects with CheckFailed when `promise` does not settle within STEP_TIMEOUT_MS. */
function withinStepTimeout(promise, step) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new CheckFailed(`${step}: timed out after ${STEP_TIMEOUT_MS} ms`)),
      STEP_TIMEOUT_MS,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Queue of the messages, pongs and the close event of one connection, so that a check
 * can wait for the next one even if it arrived before the check started waiting.
 */
class Inbox {
  constructor(ws) {
    this.messages = [];
    this.pongs = [];
    this.waiters = [];
    this.closeEvent = null;
    this.error = null;
    ws.on("open", () => this.wake());
    ws.on("message", (data, isBinary) => {
      this.messages.push({ data, isBinary });
      this.wake();
    });
    ws.on("pong", (data) => {
      this.pongs.push(data);
      this.wake();
    });
    ws.on("error", (error) => {
      this.error = error;
      this.wake();
    });
    // The EventTarget form of the close event carries `wasClean`: true only when a close
    // frame was both sent and received.
    ws.addEventListener("close", (event) => {
      this.closeEvent = { code: event.code, reason: event.reason, wasClean: event.wasClean };
      this.wake();
    });
  }

  wake() {
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) {
      waiter();
    }
  }

  /** Resolves with the first non-undefined result of `take`, polled after every event. */
  waitFor(take, step, { failOnClose = true } = {}) {
    const attempt = (resolve, reject) => {
      if (this.error !== null) {
        reject(new CheckFailed(`${step}: connection error: ${this.error.message}`));
        return;
      }
      const value = take();
      if (value !== undefined) {
        resolve(value);
        return;
      }
      if (failOnClose && this.closeEvent !== null) {
        const { code, reason } = this.closeEvent;
        reject(new CheckFailed(`${step}: connection closed early with code ${code} (${reason})`));
        return;
      }
      this.waiters.push(() => attempt(resolve, reject));
    };
    return withinStepTimeout(new Promise(attempt), step);
  }

  nextMessage(step) {
    return this.waitFor(() => this.messages.shift(), step);
  }

  /** Waits for a pong whose payload equals `payload`, skipping others. */
  pongWith(payload, step) {
    return this.waitFor(() => {
      while (this.pongs.length > 0) {
        const pong = this.pongs.shift();
        if (pong.equals(payload)) {
          return pong;
        }
        console.log(`note: skipped a pong with a different payload of ${pong.length} bytes`);
      }
      return undefined;
    }, step);
  }

  closed(step) {
    return this.waitFor(() => this.closeEvent ?? undefined, step, { failOnClose: false });
  }
}

/** Sends one frame and resolves once `ws` has written it to the socket. */
function sendFrame(ws, data, options) {
  return new Promise((resolve, reject) => {
    ws.send(data, options, (error) => (error ? reject(error) : resolve()));
  });
}

/**
 * Sends a message as the given fragments (one frame each, FIN set on the last) and checks
 * that the echo has the same type and bytes. `between` runs after the first fragment.
 */
async function checkEcho(ws, inbox, name, fragments, isBinary, between = null) {
  const sent = Buffer.concat(fragments);
  for (const [index, fragment] of fragments.entries()) {
    const fin = index === fragments.length - 1;
    await withinStepTimeout(sendFrame(ws, fragment, { binary: isBinary, fin }), `${name}: send`);
    if (index === 0 && between !== null) {
      await between();
    }
  }
  const { data, isBinary: receivedBinary } = await inbox.nextMessage(`${name}: echo`);
  if (receivedBinary !== isBinary) {
    throw new CheckFailed(
      `${name}: sent a ${describe(sent, isBinary)}, received a ${describe(data, receivedBinary)}`,
    );
  }
  if (!data.equals(sent)) {
    throw new CheckFailed(`${name}: echo of the ${describe(sent, isBinary)} differs from what was sent`);
  }
  const fragmentNote = fragments.length > 1 ? ` in ${fragments.length} fragments` : "";
  console.log(`ok: ${name} (${describe(sent, isBinary)}${fragmentNote})`);
}

function text(value) {
  return Buffer.from(value, "utf8");
}

/** Splits `data` into `count` fragments of about equal size. */
function splitEvenly(data, count) {
  const size = Math.ceil(data.length / count);
  const fragments = [];
  for (let start = 0; start < data.length; start += size) {
    fragments.push(data.subarray(start, start + size));
  }
  return fragments;
}

/**
 * Splits UTF-8 `data` into `count` fragments whose boundaries all fall inside a multi-byte
 * code point: each boundary moves forward to the next continuation byte (0b10xxxxxx).
 */
function splitInsideCodePoints(data, count) {
  const fragments = [];
  let start = 0;
  for (let index = 1; index < count; index += 1) {
    let end = Math.floor((data.length * index) / count);
    while (end < data.length && (data[end] & 0xc0) !== 0x80) {
      end += 1;
    }
    if (end >= data.length) {
      throw new Error("splitInsideCodePoints: the text has too few multi-byte code points");
    }
    fragments.push(data.subarray(start, end));
    start = end;
  }
  fragments.push(data.subarray(start));
  return fragments;
}

async function checkPing(ws, inbox) {
  const payload = text("pylon-ping");
  const started = performance.now();
  ws.ping(payload);
  await inbox.pongWith(payload, "ping");
  const latency = performance.now() - started;
  console.log(`ok: ping got a pong with the same payload in ${latency.toFixed(1)} ms`);
}

/** Checks that a ping sent between two fragments of a message gets its pong. */
async function checkPingBetweenFragments(ws, inbox) {
  const payload = text("between fragments");
  await checkEcho(
    ws,
    inbox,
    "binary with a ping between its fragments",
    [Buffer.alloc(1000, 0x41), Buffer.alloc(1000, 0x42)],
    true,
    async () => {
      ws.ping(payload);
      await inbox.pongWith(payload, "ping between fragments");
    },
  );
}

async function checkClose(ws, inbox) {
  ws.close(1000, "echo checks done");
  const event = await inbox.closed("close handshake");
  if (event.code !== 1000) {
    throw new CheckFailed(
      `close: expected the server to echo code 1000, received ${event.code} (${event.reason})`,
    );
  }
  if (!event.wasClean) {
    throw new CheckFailed("close: a close frame was not both sent and received before TCP closed");
  }
  if (ws.readyState !== WebSocket.CLOSED) {
    throw new CheckFailed(`close: expected readyState CLOSED, found ${ws.readyState}`);
  }
  console.log(
    `ok: close handshake completed with code ${event.code} on both sides ` +
      `(server reason ${JSON.stringify(event.reason)})`,
  );
}

function checkExtensions(ws, compress) {
  const extensions = ws.extensions;
  if (!compress) {
    if (extensions !== "") {
      throw new CheckFailed(`handshake: no extension offered, but ${JSON.stringify(extensions)} agreed`);
    }
    return;
  }
  if (extensions.includes("permessage-deflate")) {
    console.log(`permessage-deflate: negotiated (${extensions})`);
    return;
  }
  console.log("permessage-deflate: offered, declined by the server");
  if (process.env.PYLON_EXPECT_DEFLATE === "1") {
    throw new CheckFailed("handshake: PYLON_EXPECT_DEFLATE=1, but the server declined permessage-deflate");
  }
}

async function run(ws, url, compress) {
  const inbox = new Inbox(ws);
  await inbox.waitFor(
    () => (ws.readyState === WebSocket.OPEN ? true : undefined),
    `connect to ${url}`,
  );
  console.log(`connected to ${url}${compress ? " offering permessage-deflate" : ""}`);
  checkExtensions(ws, compress);

  await checkEcho(ws, inbox, "ASCII text", [text("hello, pylon")], false);
  await checkEcho(ws, inbox, "multi-byte UTF-8 text", [text("héllo wörld, 日本語, 🚀🛰️")], false);
  await checkEcho(ws, inbox, "binary", [Buffer.from(Array.from({ length: 256 }, (_, i) => i))], true);
  await checkEcho(ws, inbox, "empty text", [Buffer.alloc(0)], false);
  await checkEcho(ws, inbox, "empty binary", [Buffer.alloc(0)], true);

  const random = randomBytes(MIB);
  await checkEcho(ws, inbox, "1 MiB binary", [random], true);
  // 4-byte characters make frame and read boundaries likely to split a code point.
  await checkEcho(ws, inbox, "1 MiB UTF-8 text", [text("ab🚀".repeat(Math.floor(MIB / 6)))], false);
  // A repetitive message compresses well, so with permessage-deflate its frames are small.
  await checkEcho(ws, inbox, "1 MiB repetitive text", [text("pylon ".repeat(Math.floor(MIB / 6)))], false);

  await checkEcho(ws, inbox, "64 KiB binary", splitEvenly(random.subarray(0, 64 * KIB), 4), true);
  const utf8 = text("aé日🚀".repeat(Math.floor((64 * KIB) / 10)));
  await checkEcho(ws, inbox, "64 KiB UTF-8 text split inside code points", splitInsideCodePoints(utf8, 5), false);
  await checkEcho(ws, inbox, "text with an empty last fragment", [text("hello, "), text("pylon"), Buffer.alloc(0)], false);
  await checkEcho(ws, inbox, "binary with an empty first fragment", [Buffer.alloc(0), Buffer.from([1, 2, 3])], true);

  await checkPing(ws, inbox);
  await checkPingBetweenFragments(ws, inbox);
  await checkClose(ws, inbox);
}

function parseCommandLine() {
  const { values, positionals } = parseArgs({
    options: { compress: { type: "boolean", default: false } },
    allowPositionals: true,
  });
  if (positionals.length !== 1) {
    throw new UrlError("expected one URL argument: echo_client.mjs URL [--compress]");
  }
  return { url: websocketUrl(positionals[0], "/ws/echo"), compress: values.compress };
}

async function main() {
  let args;
  try {
    args = parseCommandLine();
  } catch (error) {
    console.error(`echo_client: ${error.message}`);
    return 2;
  }
  const ws = new WebSocket(args.url, {
    perMessageDeflate: args.compress,
    maxPayload: 4 * MIB,
    handshakeTimeout: STEP_TIMEOUT_MS,
  });
  let runTimer;
  const runTimeout = new Promise((_, reject) => {
    runTimer = setTimeout(
      () => reject(new CheckFailed(`the checks did not finish within ${RUN_TIMEOUT_MS} ms`)),
      RUN_TIMEOUT_MS,
    );
  });
  try {
    await Promise.race([run(ws, args.url, args.compress), runTimeout]);
  } catch (error) {
    const detail = error instanceof CheckFailed ? error.message : error.stack;
    console.error(`echo_client: FAILED: ${detail}`);
    return 1;
  } finally {
    clearTimeout(runTimer);
    // A failed check can leave the connection open, which would keep the process alive.
    ws.terminate();
  }
  console.log("echo_client: all checks passed");
  return 0;
}

// The process ends by itself once the connection is gone. process.exit() could cut off
// output, because Node.js writes to pipes asynchronously on POSIX systems.
process.exitCode = await main();

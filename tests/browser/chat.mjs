// Browser test of the chat page across a server restart.
//
// Usage: node tests/browser/chat.mjs PATH_TO_PYLON PORT
//
// Starts `pylon serve` on 127.0.0.1:PORT with a fresh data directory and opens two
// Chromium pages on /chat in the same room. Then it restarts the server and checks
// that both pages reconnect by themselves and that every message arrives exactly
// once and in seq order. A page reload checks that history survives the restart. On the
// way it also opens a WebSocket from the page to /ws/echo, with Chromium's own
// permessage-deflate offer, and checks the echoes.
// Exits 0 only on success.
// A screenshot of one page goes to /tmp/pylon-chat.png.

import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

import { chromium } from "playwright-core";

const CHROMIUM_PATH = "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const SCREENSHOT_PATH = "/tmp/pylon-chat.png";

// Time limits in milliseconds. The whole run is bounded by TEST_TIMEOUT_MS.
const TEST_TIMEOUT_MS = 180_000;
const SERVER_START_TIMEOUT_MS = 20_000;
// `pylon serve` waits up to 10 s (its --drain-timeout default) for close handshakes.
const SERVER_STOP_TIMEOUT_MS = 20_000;
const UI_TIMEOUT_MS = 15_000;
// The page's reconnect backoff is capped at 5 s, so two attempts fit in this.
const RECONNECT_TIMEOUT_MS = 20_000;

const server = {
  process: null,
  log: [],
};
let checks = 0;

function pass(description) {
  checks += 1;
  console.log(`ok: ${description}`);
}

function check(condition, message) {
  if (!condition) {
    throw new Error(message);
  }
}

function parseArgs(argv) {
  if (argv.length !== 2) {
    throw new Error("usage: node tests/browser/chat.mjs PATH_TO_PYLON PORT");
  }
  const [binary, portText] = argv;
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new Error(`invalid port ${JSON.stringify(portText)}: expected an integer from 1 to 65535`);
  }
  return { binary, port };
}

// ---- Server process ----

async function startServer(binary, port, dataDir) {
  const args = ["serve", "--listen", `127.0.0.1:${port}`, "--data-dir", dataDir];
  const child = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"] });
  for (const stream of [child.stdout, child.stderr]) {
    stream.setEncoding("utf8");
    stream.on("data", (chunk) => server.log.push(chunk.trimEnd()));
  }
  const spawned = new Promise((resolve, reject) => {
    child.once("spawn", resolve);
    child.once("error", (error) => reject(new Error(`failed to start ${binary}: ${error.message}`)));
  });
  await spawned;
  server.process = child;
  server.log.push(`--- started ${binary} ${args.join(" ")} (pid ${child.pid})`);

  const url = `http://127.0.0.1:${port}/healthz`;
  const deadline = Date.now() + SERVER_START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`server exited during startup (code ${child.exitCode}, signal ${child.signalCode})`);
    }
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (response.ok) {
        return child;
      }
    } catch {
      // Not listening yet.
    }
    await sleep(100);
  }
  throw new Error(`server did not answer ${url} within ${SERVER_START_TIMEOUT_MS} ms`);
}

function waitForExit(child, timeoutMs) {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve(true);
  }
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

async function stopServer(child) {
  process.kill(child.pid, "SIGTERM");
  const exited = await waitForExit(child, SERVER_STOP_TIMEOUT_MS);
  if (!exited) {
    process.kill(child.pid, "SIGKILL");
    await waitForExit(child, 5000);
    throw new Error(`server pid ${child.pid} did not exit within ${SERVER_STOP_TIMEOUT_MS} ms of SIGTERM`);
  }
  server.log.push(`--- pid ${child.pid} exited (code ${child.exitCode}, signal ${child.signalCode})`);
  server.process = null;
}

function killServerNow() {
  const child = server.process;
  if (child && child.exitCode === null && child.signalCode === null) {
    try {
      process.kill(child.pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
}

// ---- Page helpers ----

async function openChat(browser, baseUrl, pageErrors) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 640 } });
  const page = await context.newPage();
  page.setDefaultTimeout(UI_TIMEOUT_MS);
  page.on("pageerror", (error) => pageErrors.push(error.message));
  await page.goto(`${baseUrl}/chat`);
  return page;
}

async function joinRoom(page, nick, room) {
  await page.getByTestId("nick-input").fill(nick);
  await page.getByTestId("room-input").fill(room);
  await page.getByTestId("join-button").click();
  await waitForStatus(page, "connected", UI_TIMEOUT_MS);
}

async function waitForStatus(page, expectedState, timeoutMs) {
  await page.waitForFunction(
    (state) => document.querySelector('[data-testid="status"]').dataset.state === state,
    expectedState,
    { timeout: timeoutMs },
  );
}

async function waitForStatusNot(page, leftState, timeoutMs) {
  await page.waitForFunction(
    (state) => document.querySelector('[data-testid="status"]').dataset.state !== state,
    leftState,
    { timeout: timeoutMs },
  );
}

async function waitForMembers(page, nicks) {
  const expectedNicks = [...nicks].sort();
  await page.waitForFunction(
    (expected) => {
      const items = document.querySelectorAll('[data-testid="member-list"] [data-testid="member"]');
      const names = [...items].map((item) => item.dataset.nick).sort();
      return JSON.stringify(names) === JSON.stringify(expected);
    },
    expectedNicks,
    { timeout: UI_TIMEOUT_MS },
  );
}

async function sendWithEnter(page, text) {
  const input = page.getByTestId("message-input");
  await input.fill(text);
  await input.press("Enter");
}

async function sendWithButton(page, text) {
  await page.getByTestId("message-input").fill(text);
  await page.getByTestId("send-button").click();
}

async function waitForTexts(page, texts, timeoutMs = UI_TIMEOUT_MS) {
  await page.waitForFunction(
    (expected) => {
      const nodes = [...document.querySelectorAll('[data-testid="message-list"] [data-testid="message-text"]')];
      const values = nodes.map((node) => node.textContent);
      return expected.every((text) => values.includes(text));
    },
    texts,
    { timeout: timeoutMs },
  );
}

async function waitForNoPending(page) {
  await page.waitForFunction(
    () => document.querySelectorAll('[data-testid="pending-list"] > *').length === 0,
    null,
    { timeout: UI_TIMEOUT_MS },
  );
}

async function pendingCount(page) {
  return page.locator('[data-testid="pending-list"] > *').count();
}

async function readMessages(page) {
  return page.$$eval('[data-testid="message-list"] > [data-testid="message"]', (items) =>
    items.map((item) => ({
      seq: Number(item.dataset.seq),
      nick: item.querySelector('[data-testid="message-nick"]').textContent,
      text: item.querySelector('[data-testid="message-text"]').textContent,
    })),
  );
}

// Checks that seqs strictly increase, so no message is shown twice or out of order,
// and that each text appears exactly once.
function checkOrderedOnce(label, messages) {
  for (let i = 1; i < messages.length; i += 1) {
    check(
      messages[i].seq > messages[i - 1].seq,
      `${label}: data-seq not strictly increasing at index ${i}: ${messages.map((m) => m.seq).join(", ")}`,
    );
  }
  const counts = new Map();
  for (const message of messages) {
    counts.set(message.text, (counts.get(message.text) ?? 0) + 1);
  }
  for (const [text, count] of counts) {
    check(count === 1, `${label}: message ${JSON.stringify(text)} shown ${count} times`);
  }
}

function describeMessages(messages) {
  return messages.map((m) => `${m.seq}:${m.nick}:${m.text}`).join(" | ");
}

// ---- Test ----

// Opens a WebSocket from the page to /ws/echo with the browser's own client, which offers
// permessage-deflate, and checks that text and binary messages of several sizes come back
// unchanged. Returns the agreed extensions, the number of echoes and any mismatches.
async function echoFromPage(page) {
  return page.evaluate(async (timeoutMs) => {
    const url = `ws://${location.host}/ws/echo`;
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    const received = [];
    let wake = null;
    ws.onmessage = (event) => {
      received.push(event.data);
      if (wake) {
        wake();
      }
    };
    const deadline = Date.now() + timeoutMs;
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error(`WebSocket to ${url} failed`));
    });
    const repeated = "compressible text ".repeat(4000);
    const bytes = new Uint8Array(100_000).map((_, i) => (i * 7) % 13);
    const messages = ["", "short ✓", repeated, bytes.buffer];
    for (const message of messages) {
      ws.send(message);
    }
    while (received.length < messages.length && Date.now() < deadline) {
      await new Promise((resolve) => {
        wake = resolve;
        setTimeout(resolve, 100);
      });
    }
    const mismatches = [];
    messages.forEach((sent, i) => {
      const got = received[i];
      if (typeof sent === "string") {
        if (got !== sent) {
          mismatches.push(`message ${i} (text of ${sent.length} chars)`);
        }
      } else {
        const same =
          got instanceof ArrayBuffer &&
          got.byteLength === sent.byteLength &&
          new Uint8Array(got).every((b, j) => b === bytes[j]);
        if (!same) {
          mismatches.push(`message ${i} (binary of ${sent.byteLength} bytes)`);
        }
      }
    });
    const extensions = ws.extensions;
    ws.close(1000);
    return { extensions, count: received.length, mismatches };
  }, UI_TIMEOUT_MS);
}

async function runTest(binary, port) {
  const baseUrl = `http://127.0.0.1:${port}`;
  const dataDir = await mkdtemp(join(tmpdir(), "pylon-browser-"));
  const room = `browser-${Math.random().toString(36).slice(2, 8)}`;
  const pageErrors = [];
  let browser = null;

  try {
    await startServer(binary, port, dataDir);
    pass(`server listening on ${baseUrl} with data dir ${dataDir}`);

    browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS });
    const pageA = await openChat(browser, baseUrl, pageErrors);
    const pageB = await openChat(browser, baseUrl, pageErrors);

    await joinRoom(pageA, "ann", room);
    await joinRoom(pageB, "bob", room);
    pass(`both pages joined room ${room}`);

    await waitForMembers(pageA, ["ann", "bob"]);
    await waitForMembers(pageB, ["ann", "bob"]);
    pass("member lists on both pages show ann and bob");

    await sendWithEnter(pageA, "hello from ann");
    await waitForTexts(pageB, ["hello from ann"]);
    await sendWithButton(pageB, "hi ann, this is bob ✓");
    await waitForTexts(pageA, ["hi ann, this is bob ✓"]);
    await waitForNoPending(pageA);
    await waitForNoPending(pageB);
    pass("messages sent with Enter and with the Send button reach the other page");
    const beforeRestart = await readMessages(pageB);

    const echo = await echoFromPage(pageA);
    check(
      echo.extensions.startsWith("permessage-deflate"),
      `Chromium and /ws/echo agreed on extensions ${JSON.stringify(echo.extensions)}, expected permessage-deflate`,
    );
    check(echo.mismatches.length === 0, `echo mismatches from the browser: ${echo.mismatches.join(", ")}`);
    pass(`Chromium's WebSocket negotiates ${echo.extensions} with /ws/echo and gets ${echo.count} echoes back unchanged`);

    const stopped = server.process;
    await stopServer(stopped);
    check(
      stopped.exitCode === 0,
      `server exited with code ${stopped.exitCode} and signal ${stopped.signalCode} on SIGTERM, expected code 0`,
    );
    pass("server exits with code 0 on SIGTERM");
    await waitForStatusNot(pageA, "connected", UI_TIMEOUT_MS);
    await waitForStatusNot(pageB, "connected", UI_TIMEOUT_MS);
    pass("both pages leave the connected state when the server stops");

    const duringRestart = ["sent while the server was down (1)", "sent while the server was down (2)"];
    for (const text of duringRestart) {
      await sendWithEnter(pageA, text);
    }
    const queued = await pendingCount(pageA);
    check(queued === duringRestart.length, `page A: ${queued} pending messages, expected ${duringRestart.length}`);
    pass("messages sent while the server is down wait in the pending list");

    await startServer(binary, port, dataDir);
    await waitForStatus(pageA, "connected", RECONNECT_TIMEOUT_MS);
    await waitForStatus(pageB, "connected", RECONNECT_TIMEOUT_MS);
    pass("both pages reconnect by themselves after the restart");

    await waitForMembers(pageA, ["ann", "bob"]);
    await waitForMembers(pageB, ["ann", "bob"]);
    await sendWithEnter(pageA, "after the restart from ann");
    await sendWithEnter(pageB, "after the restart from bob");

    const allTexts = [
      ...beforeRestart.map((m) => m.text),
      ...duringRestart,
      "after the restart from ann",
      "after the restart from bob",
    ];
    await waitForTexts(pageA, allTexts);
    await waitForTexts(pageB, allTexts);
    await waitForNoPending(pageA);
    await waitForNoPending(pageB);
    // Let any late duplicate arrive before the lists are compared.
    await sleep(500);

    const messagesA = await readMessages(pageA);
    const messagesB = await readMessages(pageB);
    checkOrderedOnce("page A", messagesA);
    checkOrderedOnce("page B", messagesB);
    check(
      describeMessages(messagesA) === describeMessages(messagesB),
      `pages differ:\n  A: ${describeMessages(messagesA)}\n  B: ${describeMessages(messagesB)}`,
    );
    check(
      messagesA.length === allTexts.length,
      `page A shows ${messagesA.length} messages, expected ${allTexts.length}: ${describeMessages(messagesA)}`,
    );
    const annOrder = messagesA.filter((m) => m.nick === "ann").map((m) => m.text);
    const annSent = ["hello from ann", ...duringRestart, "after the restart from ann"];
    check(
      JSON.stringify(annOrder) === JSON.stringify(annSent),
      `ann's messages in seq order are ${JSON.stringify(annOrder)}, expected ${JSON.stringify(annSent)}`,
    );
    pass(`all ${allTexts.length} messages shown once each, in seq order, on both pages`);

    await pageB.screenshot({ path: SCREENSHOT_PATH });
    pass(`screenshot written to ${SCREENSHOT_PATH}`);

    await pageA.reload();
    await joinRoom(pageA, "ann", room);
    await waitForTexts(pageA, allTexts);
    const reloaded = await readMessages(pageA);
    checkOrderedOnce("page A after reload", reloaded);
    check(
      describeMessages(reloaded) === describeMessages(messagesB),
      `history after reload differs:\n  got:  ${describeMessages(reloaded)}\n  want: ${describeMessages(messagesB)}`,
    );
    pass("history from before the restart is shown after a page reload");

    check(pageErrors.length === 0, `uncaught errors in the pages: ${pageErrors.join("; ")}`);
    pass("no uncaught errors in the pages");
  } finally {
    if (browser) {
      await browser.close().catch(() => {});
    }
    if (server.process) {
      await stopServer(server.process).catch((error) => {
        console.error(`warning: ${error.message}`);
        killServerNow();
      });
    }
    await rm(dataDir, { recursive: true, force: true });
  }
}

async function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (error) {
    console.error(error.message);
    return 2;
  }

  // Bounds the whole run, because a hung wait must not keep CI waiting.
  const watchdog = setTimeout(() => {
    console.error(`FAILED: test did not finish within ${TEST_TIMEOUT_MS} ms`);
    killServerNow();
    process.exit(1);
  }, TEST_TIMEOUT_MS);

  try {
    await runTest(args.binary, args.port);
    console.log(`browser chat test: ${checks} checks passed`);
    return 0;
  } catch (error) {
    console.error(`FAILED: ${error.message}`);
    console.error("server output:");
    console.error(server.log.join("\n"));
    return 1;
  } finally {
    clearTimeout(watchdog);
  }
}

process.on("exit", killServerNow);
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    killServerNow();
    process.exit(1);
  });
}

process.exitCode = await main();

// Browser test of a wss:// WebSocket from a page served over HTTPS by `pylon serve`.
//
// Usage: node tests/browser/wss_h2.mjs ORIGIN
//
// ORIGIN is the https:// origin of a running `pylon serve --tls-self-signed`. Headless
// Chromium opens ORIGIN/ (its certificate errors are ignored, because the certificate is
// self-signed), records the HTTP version of the page load, opens a WebSocket to
// /ws/echo from the page, checks two echoes and, while that WebSocket is open, fetches
// /metrics from the page. It prints `page protocol: <protocol>` and every
// `pylon_ws_connections_open{endpoint="echo",...}` line that is not 0, then
// `wss_h2: all checks passed`, and exits 0 when every check passed.

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
  "--ignore-certificate-errors",
];

/** Time limit of the whole run, in milliseconds. */
const TEST_TIMEOUT_MS = 60_000;

async function run(origin) {
  const browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: CHROMIUM_ARGS,
  });
  try {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    const cdp = await context.newCDPSession(page);
    await cdp.send("Network.enable");
    let pageProtocol = null;
    cdp.on("Network.responseReceived", (event) => {
      if (event.type === "Document") {
        pageProtocol = event.response.protocol;
      }
    });

    const response = await page.goto(`${origin}/`);
    if (response === null || response.status() !== 200) {
      throw new Error(`loading ${origin}/ failed with status ${response?.status()}`);
    }
    console.log(`page protocol: ${pageProtocol}`);

    const result = await page.evaluate(async () => {
      const url = `wss://${location.host}/ws/echo`;
      const ws = new WebSocket(url);
      ws.binaryType = "arraybuffer";
      const received = [];
      const waiting = [];
      ws.onmessage = (event) => {
        if (waiting.length > 0) {
          waiting.shift()(event.data);
        } else {
          received.push(event.data);
        }
      };
      const next = () =>
        new Promise((resolve, reject) => {
          if (received.length > 0) {
            resolve(received.shift());
            return;
          }
          waiting.push(resolve);
          setTimeout(() => reject(new Error("no echo within 10 s")), 10_000);
        });
      await new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = () => reject(new Error(`WebSocket to ${url} failed to open`));
      });
      ws.send("hello from chromium");
      const text = await next();
      ws.send(new Uint8Array(70_000).fill(7));
      const binary = await next();
      const metrics = await (await fetch("/metrics")).text();
      ws.close(1000, "done");
      return {
        text,
        binaryLength: binary.byteLength,
        extensions: ws.extensions,
        metrics,
      };
    });

    if (result.text !== "hello from chromium") {
      throw new Error(`text echo differs: ${JSON.stringify(result.text)}`);
    }
    if (result.binaryLength !== 70_000) {
      throw new Error(`binary echo has ${result.binaryLength} bytes, expected 70000`);
    }
    console.log(`extensions: ${result.extensions}`);
    for (const line of result.metrics.split("\n")) {
      if (line.startsWith('pylon_ws_connections_open{endpoint="echo"') && !line.endsWith(" 0")) {
        console.log(line);
      }
    }
    console.log("wss_h2: all checks passed");
  } finally {
    await browser.close();
  }
}

const origin = process.argv[2];
if (origin === undefined || !origin.startsWith("https://")) {
  console.error("usage: node tests/browser/wss_h2.mjs https://HOST:PORT");
  process.exit(2);
}
const timer = setTimeout(() => {
  console.error(`wss_h2: timed out after ${TEST_TIMEOUT_MS} ms`);
  process.exit(1);
}, TEST_TIMEOUT_MS);
run(origin).then(
  () => {
    clearTimeout(timer);
    process.exit(0);
  },
  (error) => {
    console.error(`wss_h2: ${error.stack ?? error}`);
    process.exit(1);
  },
);

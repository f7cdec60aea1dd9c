// Build WebSocket URLs for the Node.js test peers and reject any host off this machine.

import { isIPv4 } from "node:net";

/** A URL that the test peers must not or cannot connect to. */
export class UrlError extends Error {}

/** Returns true for localhost and for addresses in 127.0.0.0/8 or ::1. */
export function isLoopback(host) {
  if (host === "localhost" || host === "::1") {
    return true;
  }
  return isIPv4(host) && host.startsWith("127.");
}

/**
 * Converts `url` to a ws:// URL on a loopback host.
 *
 * http:// becomes ws:// and an empty path becomes `defaultPath`, so both
 * `http://127.0.0.1:8080` and `ws://127.0.0.1:8080/ws/echo` are accepted.
 * Throws UrlError for other schemes and for hosts that are not loopback.
 */
export function websocketUrl(url, defaultPath) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    throw new UrlError(`invalid URL ${JSON.stringify(url)}: expected an http:// or ws:// URL`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "ws:") {
    throw new UrlError(`invalid URL ${JSON.stringify(url)}: expected an http:// or ws:// URL`);
  }
  // The WHATWG parser normalizes IPv4 forms such as 127.1 to dotted quads and writes
  // IPv6 hosts compressed and in brackets.
  const host = parsed.hostname.replace(/^\[(.*)\]$/, "$1");
  if (host === "") {
    throw new UrlError(`invalid URL ${JSON.stringify(url)}: missing host`);
  }
  if (!isLoopback(host)) {
    throw new UrlError(
      `invalid host ${JSON.stringify(host)} in ${JSON.stringify(url)}: ` +
        "the test peers only connect to 127.0.0.0/8, ::1 or localhost",
    );
  }
  const path = parsed.pathname === "" || parsed.pathname === "/" ? defaultPath : parsed.pathname;
  return `ws://${parsed.host}${path}${parsed.search}`;
}

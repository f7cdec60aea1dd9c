// Checks that the WebSocket echo server at a ws:// URL declines a permessage-deflate offer,
// returns text and binary messages unchanged (16 B, 64 KiB and 1 MiB) and replies to a client
// close with a close frame.
// Usage: node check-echo.mjs ws://127.0.0.1:PORT/PATH. Exits 0 on success, 1 on failure.
import WebSocket from 'ws';

const TIMEOUT_MS = 10_000;
const url = process.argv[2];
if (!url || !url.startsWith('ws://127.0.0.1:')) {
  console.error('usage: node check-echo.mjs ws://127.0.0.1:PORT/PATH');
  process.exit(2);
}

function pattern(size) {
  const bytes = Buffer.alloc(size);
  for (let i = 0; i < size; i++) {
    bytes[i] = 97 + (i % 26);
  }
  return bytes;
}

const cases = [
  { text: true, data: pattern(16) },
  { text: false, data: pattern(16) },
  { text: false, data: pattern(64 * 1024) },
  { text: true, data: pattern(1024 * 1024) },
  { text: false, data: pattern(1024 * 1024) },
];

const timer = setTimeout(() => fail(`timed out after ${TIMEOUT_MS} ms`), TIMEOUT_MS);

function fail(reason) {
  console.error(`${url}: ${reason}`);
  process.exit(1);
}

// Offer compression, as the load generator does, so that a server that would compress fails
// here instead of being measured against uncompressed peers.
const socket = new WebSocket(url, { perMessageDeflate: true });
let index = 0;

function sendCurrent() {
  const { text, data } = cases[index];
  socket.send(text ? data.toString('latin1') : data, { binary: !text });
}

socket.on('open', () => {
  if (socket.extensions !== '') {
    fail(`server negotiated extensions "${socket.extensions}"; the comparison needs none`);
  }
  sendCurrent();
});
socket.on('error', (error) => fail(`connection failed: ${error.message}`));
socket.on('message', (data, isBinary) => {
  const { text, data: expected } = cases[index];
  if (isBinary === text) {
    fail(`case ${index}: sent ${text ? 'text' : 'binary'}, received the other kind`);
  }
  if (!Buffer.from(data).equals(expected)) {
    fail(`case ${index}: echo of ${expected.length} bytes differs (received ${data.length} bytes)`);
  }
  index += 1;
  if (index < cases.length) {
    sendCurrent();
  } else {
    socket.close(1000, 'done');
  }
});
socket.on('close', (code) => {
  clearTimeout(timer);
  if (index < cases.length) {
    fail(`closed with ${code} after ${index} of ${cases.length} echoes`);
  }
  if (code !== 1000) {
    fail(`expected close code 1000 in the server's close reply, received ${code}`);
  }
  console.error(`${url}: no compression, echo and close ok`);
});

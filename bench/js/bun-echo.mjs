// Echo server on Bun.serve (Bun's WebSocket server is built on uWebSockets): returns every
// text and binary message unchanged. Usage: bun bun-echo.mjs --port PORT (listens on
// 127.0.0.1 only).
import { parsePort } from './port.mjs';

const port = parsePort(process.argv.slice(2));

Bun.serve({
  hostname: '127.0.0.1',
  port,
  fetch(request, server) {
    if (server.upgrade(request)) {
      return undefined;
    }
    return new Response('expected a WebSocket upgrade', { status: 426 });
  },
  websocket: {
    perMessageDeflate: false,
    // Bun replies to pings and close frames itself. A string message is sent back as
    // text and a Buffer as binary.
    message(socket, message) {
      socket.send(message);
    },
  },
});
console.error(`bun echo listening on 127.0.0.1:${port}`);

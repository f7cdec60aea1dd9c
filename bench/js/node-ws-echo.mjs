// Echo server on the npm package `ws` under Node.js: returns every text and binary message
// unchanged. Usage: node node-ws-echo.mjs --port PORT (listens on 127.0.0.1 only).
import { WebSocketServer } from 'ws';

import { parsePort } from './port.mjs';

const port = parsePort(process.argv.slice(2));
// perMessageDeflate is off by default in ws 8, and it is set here so the comparison never
// depends on that default.
const server = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });

server.on('connection', (socket) => {
  // ws replies to pings and close frames itself.
  socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }));
  socket.on('error', (error) => console.error(`connection failed: ${error.message}`));
});
server.on('listening', () => console.error(`node ws echo listening on 127.0.0.1:${port}`));

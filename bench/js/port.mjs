// Parses `--port PORT` from a list of command-line arguments, exiting with a usage message
// when it is missing or invalid.
export function parsePort(args) {
  const index = args.indexOf('--port');
  const value = index >= 0 ? args[index + 1] : undefined;
  const port = Number(value);
  if (args.length !== 2 || !Number.isInteger(port) || port < 1 || port > 65535) {
    console.error(`invalid arguments ${JSON.stringify(args)}; usage: --port PORT (1-65535)`);
    process.exit(2);
  }
  return port;
}

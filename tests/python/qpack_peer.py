"""Encode and decode QPACK field sections with pylsqpack, the QPACK library aioquic uses.

Reads one JSON object from stdin:
  {"encode": [[[name_hex, value_hex], ...], ...], "decode": [section_hex, ...]}
and writes one JSON object to stdout:
  {"encoded": [section_hex, ...], "decoded": [[[name_hex, value_hex], ...] or {"error": text}, ...]}

Both sides run with a dynamic table capacity of 0 and no blocked streams, the settings
Pylon's HTTP/3 layer sends, so every section is self-contained.
"""

import json
import sys

import pylsqpack


def encode_sections(sections):
    encoder = pylsqpack.Encoder()
    encoder.apply_settings(0, 0)
    out = []
    for stream_id, fields in enumerate(sections):
        headers = [(bytes.fromhex(name), bytes.fromhex(value)) for name, value in fields]
        encoder_stream, section = encoder.encode(stream_id * 4, headers)
        if encoder_stream:
            raise SystemExit("pylsqpack wrote to its encoder stream with capacity 0")
        out.append(section.hex())
    return out


def decode_sections(sections):
    out = []
    for stream_id, section in enumerate(sections):
        decoder = pylsqpack.Decoder(0, 0)
        try:
            _, headers = decoder.feed_header(stream_id * 4, bytes.fromhex(section))
        except Exception as error:  # pylsqpack raises DecompressionFailed and others
            out.append({"error": f"{type(error).__name__}: {error}"})
            continue
        out.append([[name.hex(), value.hex()] for name, value in headers])
    return out


def main():
    request = json.load(sys.stdin)
    result = {
        "encoded": encode_sections(request.get("encode", [])),
        "decoded": decode_sections(request.get("decode", [])),
    }
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()

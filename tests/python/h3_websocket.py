"""WebSocket frames (RFC 6455) and an aioquic HTTP/3 protocol for extended CONNECT
(RFC 9220), shared by h3_ws_client.py and h3_ws_server.py.

The frames are built and parsed here, masking included, so that the peers depend on
aioquic for QUIC and HTTP/3 only.
"""

import asyncio
import os
import struct

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.events import QuicEvent, StreamReset

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

# The largest payload a peer accepts in one frame, so a bad length cannot make it buffer
# without limit.
MAX_FRAME = 16 * 1024 * 1024


class FrameError(Exception):
    """A frame that breaks RFC 6455. The receiver closes with code 1002."""


def encode_frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = True) -> bytes:
    """Encodes one frame; client frames are masked with a random key."""
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        head = struct.pack("!BB", first, mask_bit | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + apply_mask(payload, key)


def apply_mask(payload: bytes, key: bytes) -> bytes:
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big"
    )


class FrameReader:
    """Parses frames from a byte stream. `masked` is whether frames must be masked."""

    def __init__(self, masked: bool) -> None:
        self.masked = masked
        self.buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self.buffer.extend(data)

    def next_frame(self) -> tuple[bool, int, bytes] | None:
        """Returns (fin, opcode, payload) of the next whole frame, or None."""
        if len(self.buffer) < 2:
            return None
        first, second = self.buffer[0], self.buffer[1]
        if first & 0x70:
            raise FrameError("reserved bits set without an extension")
        if bool(second & 0x80) != self.masked:
            raise FrameError("frame masking does not match the sender's role")
        length = second & 0x7F
        offset = 2
        if length == 126:
            if len(self.buffer) < 4:
                return None
            (length,) = struct.unpack_from("!H", self.buffer, 2)
            offset = 4
        elif length == 127:
            if len(self.buffer) < 10:
                return None
            (length,) = struct.unpack_from("!Q", self.buffer, 2)
            offset = 10
        if length > MAX_FRAME:
            raise FrameError(f"frame of {length} bytes exceeds {MAX_FRAME}")
        key = b""
        if self.masked:
            if len(self.buffer) < offset + 4:
                return None
            key = bytes(self.buffer[offset : offset + 4])
            offset += 4
        if len(self.buffer) < offset + length:
            return None
        payload = bytes(self.buffer[offset : offset + length])
        del self.buffer[: offset + length]
        if self.masked:
            payload = apply_mask(payload, key)
        return bool(first & 0x80), first & 0x0F, payload


class Stream:
    """The events of one request stream: headers, data and its end or reset."""

    def __init__(self) -> None:
        self.events: asyncio.Queue = asyncio.Queue()


class H3Protocol(QuicConnectionProtocol):
    """An aioquic connection with HTTP/3 on top, delivering events per stream."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.streams: dict[int, Stream] = {}
        self.new_streams: asyncio.Queue = asyncio.Queue()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamReset):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.events.put_nowait(event)
        for h3_event in self.h3.handle_event(event):
            self.h3_event_received(h3_event)

    def h3_event_received(self, event: H3Event) -> None:
        if not isinstance(event, (HeadersReceived, DataReceived)):
            return
        stream = self.streams.get(event.stream_id)
        if stream is None:
            stream = Stream()
            self.streams[event.stream_id] = stream
            self.new_streams.put_nowait(event.stream_id)
        stream.events.put_nowait(event)

    def send_headers(self, stream_id: int, headers: list, end_stream: bool = False) -> None:
        self.h3.send_headers(stream_id, headers, end_stream=end_stream)
        self.transmit()

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self.h3.send_data(stream_id, data, end_stream=end_stream)
        self.transmit()


class Tunnel:
    """The byte stream of an extended CONNECT, read as WebSocket frames."""

    def __init__(self, protocol: H3Protocol, stream_id: int, masked_input: bool) -> None:
        self.protocol = protocol
        self.stream_id = stream_id
        self.reader = FrameReader(masked=masked_input)
        self.ended = False

    def write(self, data: bytes, end_stream: bool = False) -> None:
        self.protocol.send_data(self.stream_id, data, end_stream=end_stream)

    async def read_frame(self, timeout: float) -> tuple[bool, int, bytes] | None:
        """Returns the next frame, or None if the stream ended first."""
        events = self.protocol.streams[self.stream_id].events
        while True:
            frame = self.reader.next_frame()
            if frame is not None:
                return frame
            if self.ended:
                return None
            event = await asyncio.wait_for(events.get(), timeout)
            if isinstance(event, StreamReset):
                raise ConnectionError(f"stream reset with code {event.error_code:#x}")
            if isinstance(event, DataReceived):
                self.reader.feed(event.data)
                if event.stream_ended:
                    self.ended = True
            elif isinstance(event, HeadersReceived) and event.stream_ended:
                self.ended = True

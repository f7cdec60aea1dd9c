#!/usr/bin/env python3
"""Check Pylon's chat protocol on /ws/chat with two `websockets` clients.

Usage: chat_client.py URL, where URL is http://127.0.0.1:PORT or the full
ws://127.0.0.1:PORT/ws/chat. Each run uses a fresh random room, so it can run
again against the same data directory. Exits 0 when every check passes and 1
with the failed check on stderr otherwise.
"""

import argparse
import asyncio
import json
import secrets
import sys
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.protocol import State

from loopback import UrlError, websocket_url

EVENT_TIMEOUT = 5.0
# The server's default limit on the UTF-8 size of one message text.
MAX_TEXT_BYTES = 4096


class CheckFailed(Exception):
    """A check whose result differs from the expected one."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


class Peer:
    """One chat client that buffers every event the server sends.

    `expect` takes the first buffered event that matches, in any position, because
    the protocol leaves the order of some events open (an `ack` and the sender's
    own `message`, for example). `expect_no_more` then shows that nothing else,
    such as a duplicate delivery, arrived.
    """

    def __init__(self, nick: str, ws: ClientConnection) -> None:
        self.nick = nick
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.own_joins: list[dict[str, Any]] = []
        self.arrivals = 0
        self.closed = False
        self.changed = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, nick: str, url: str) -> "Peer":
        ws = await connect(url, compression=None, open_timeout=EVENT_TIMEOUT)
        return cls(nick, ws)

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                if not isinstance(frame, str):
                    event = {"type": "<binary frame>", "size": len(frame)}
                else:
                    try:
                        event = json.loads(frame)
                    except json.JSONDecodeError:
                        event = {"type": "<invalid JSON>", "text": frame}
                self.arrivals += 1
                event["_arrival"] = self.arrivals
                # The protocol leaves open whether a joining client also receives the
                # presence event about its own join, so such an event is set aside.
                if self._is_own_join(event):
                    self.own_joins.append(event)
                else:
                    self.events.append(event)
                self.changed.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            self.changed.set()

    def _is_own_join(self, event: dict[str, Any]) -> bool:
        return (
            event.get("type") == "presence"
            and event.get("event") == "join"
            and event.get("nick") == self.nick
        )

    async def send(self, request: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(request))

    async def send_raw(self, frame: str | bytes) -> None:
        await self.ws.send(frame)

    async def expect(self, event_type: str, **fields: Any) -> dict[str, Any]:
        """Remove and return the first buffered event of `event_type` with `fields`."""
        deadline = time.monotonic() + EVENT_TIMEOUT
        while True:
            for index, event in enumerate(self.events):
                if event.get("type") != event_type:
                    continue
                if all(event.get(key) == value for key, value in fields.items()):
                    return self.events.pop(index)
            if self.closed:
                raise CheckFailed(
                    f"{self.nick}: connection closed (code {self.ws.close_code}) while waiting "
                    f"for {event_type} {fields}; buffered events: {self._pending()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CheckFailed(
                    f"{self.nick}: no {event_type} event with {fields} within {EVENT_TIMEOUT} s; "
                    f"buffered events: {self._pending()}"
                )
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                pass

    def expect_no_more(self, context: str) -> None:
        check(
            not self.events,
            f"{self.nick}: unexpected events {context}: {self._pending()}",
        )

    def _pending(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in e.items() if k != "_arrival"} for e in self.events]

    async def close(self) -> None:
        await asyncio.wait_for(self.ws.close(1000), EVENT_TIMEOUT)
        await asyncio.wait_for(self.reader, EVENT_TIMEOUT)


async def join(peer: Peer, room: str, since: int | None = None) -> tuple[dict, list[dict]]:
    """Join `room` and return the `joined` event and the messages of its history pages."""
    request: dict[str, Any] = {"type": "join", "room": room, "nick": peer.nick}
    if since is not None:
        request["since"] = since
    await peer.send(request)

    joined = await peer.expect("joined", room=room)
    check(joined.get("nick") == peer.nick, f"{peer.nick}: joined names nick {joined.get('nick')!r}")
    messages: list[dict] = []
    while True:
        page = await peer.expect("history", room=room)
        check(
            page["_arrival"] > joined["_arrival"],
            f"{peer.nick}: history arrived before joined",
        )
        messages.extend(page.get("messages", []))
        if since is None or not page.get("has_more"):
            break
    return joined, messages


async def send_message(
    sender: Peer, others: list[Peer], room: str, text: str
) -> dict[str, Any]:
    """Send one message and check the ack and the delivery to everyone in the room."""
    client_id = f"py-{secrets.token_hex(6)}"
    await sender.send({"type": "send", "room": room, "text": text, "client_id": client_id})

    ack = await sender.expect("ack", room=room, client_id=client_id)
    check(ack.get("duplicate") is False, f"{sender.nick}: first send acked with {ack}")
    seq = ack.get("seq")
    check(isinstance(seq, int) and seq > 0, f"{sender.nick}: ack has invalid seq {seq!r}")

    for peer in [sender, *others]:
        message = await peer.expect("message", room=room, seq=seq)
        check(message.get("nick") == sender.nick, f"{peer.nick}: message {seq} has nick {message.get('nick')!r}")
        check(message.get("text") == text, f"{peer.nick}: message {seq} has text {message.get('text')!r}")
        check(
            message.get("client_id") == client_id,
            f"{peer.nick}: message {seq} has client_id {message.get('client_id')!r}",
        )
        ts = message.get("ts")
        now_ms = time.time() * 1000
        check(
            isinstance(ts, int) and abs(ts - now_ms) < 60_000,
            f"{peer.nick}: message {seq} has ts {ts!r}, expected unix milliseconds near {now_ms:.0f}",
        )
    return {"seq": seq, "client_id": client_id, "text": text}


def sorted_members(event: dict[str, Any]) -> list[str]:
    return sorted(event.get("members", []))


async def check_join_and_presence(url: str, room: str) -> tuple[Peer, Peer]:
    ann = await Peer.open("ann", url)
    joined, history = await join(ann, room)
    check(sorted_members(joined) == ["ann"], f"ann: joined members {joined.get('members')}")
    check(joined.get("last_seq") == 0, f"ann: new room has last_seq {joined.get('last_seq')!r}")
    check(history == [], f"ann: new room has history {history}")
    print("ok: join of a new room returns joined and an empty history")

    bob = await Peer.open("bob", url)
    joined, history = await join(bob, room)
    check(sorted_members(joined) == ["ann", "bob"], f"bob: joined members {joined.get('members')}")
    check(history == [], f"bob: history {history}")
    presence = await ann.expect("presence", room=room, event="join", nick="bob")
    check(sorted_members(presence) == ["ann", "bob"], f"ann: presence members {presence.get('members')}")
    ann.expect_no_more("after bob joined")
    bob.expect_no_more("after joining")
    print("ok: presence join reaches the other member with both members listed")
    return ann, bob


async def check_idempotent_resend(ann: Peer, bob: Peer, room: str, first: dict) -> dict:
    await ann.send({"type": "send", "room": room, "text": first["text"], "client_id": first["client_id"]})
    ack = await ann.expect("ack", room=room, client_id=first["client_id"])
    check(ack.get("duplicate") is True, f"ann: resend acked with {ack}, expected duplicate true")
    check(ack.get("seq") == first["seq"], f"ann: resend acked with seq {ack.get('seq')}, expected {first['seq']}")

    # A message sent after the resend shows that the resend was not delivered again.
    reply = await send_message(bob, [ann], room, "hi ann, 👋")
    check(reply["seq"] == first["seq"] + 1, f"bob: reply has seq {reply['seq']}, expected {first['seq'] + 1}")
    ann.expect_no_more("after the resend")
    bob.expect_no_more("after the resend")
    print("ok: resend with the same client_id is acked as duplicate and not delivered again")
    return reply


async def expect_error(peer: Peer, frame: str | bytes, code: str, case: str) -> None:
    await peer.send_raw(frame)
    error = await peer.expect("error", code=code)
    message = error.get("message")
    check(isinstance(message, str) and message != "", f"{peer.nick}: {case}: error has no message: {error}")
    print(f"ok: {case} returns error {code}")


async def check_errors(ann: Peer, bob: Peer, room: str) -> None:
    await expect_error(ann, "{not json", "invalid_json", "invalid JSON")
    await expect_error(ann, json.dumps({"type": "dance"}), "unknown_type", "unknown type")
    await expect_error(ann, json.dumps({"type": "send", "room": room}), "missing_field", "send without text")
    await expect_error(ann, b"\x00\x01", "binary_not_supported", "binary frame")
    await expect_error(
        ann,
        json.dumps({"type": "send", "room": f"{room}-other", "text": "x"}),
        "not_joined",
        "send to a room not joined",
    )
    await expect_error(
        ann,
        json.dumps({"type": "send", "room": room, "text": "x" * (MAX_TEXT_BYTES + 1)}),
        "too_large",
        f"text of {MAX_TEXT_BYTES + 1} bytes",
    )
    await expect_error(
        ann,
        json.dumps({"type": "join", "room": f"{room}-other", "nick": "not-ann"}),
        "nick_mismatch",
        "join with a second nick",
    )

    await ann.send({"type": "ping"})
    await ann.expect("pong")
    check(ann.ws.state is State.OPEN, f"ann: connection is {ann.ws.state.name} after the errors")
    ann.expect_no_more("after the error checks")
    bob.expect_no_more("after ann's error checks")
    print("ok: connection stays open after errors and answers ping with pong")


async def check_reconnect_since(url: str, ann: Peer, bob: Peer, room: str, last_seen: int) -> None:
    await bob.close()
    presence = await ann.expect("presence", room=room, event="leave", nick="bob")
    check(sorted_members(presence) == ["ann"], f"ann: presence members after leave {presence.get('members')}")
    print("ok: presence leave reaches the other member when a connection closes")

    missed = [
        await send_message(ann, [], room, "sent while bob was away (1)"),
        await send_message(ann, [], room, "sent while bob was away (2)"),
    ]

    bob_again = await Peer.open("bob", url)
    joined, history = await join(bob_again, room, since=last_seen)
    check(sorted_members(joined) == ["ann", "bob"], f"bob: rejoined members {joined.get('members')}")
    check(
        joined.get("last_seq") == missed[-1]["seq"],
        f"bob: rejoined last_seq {joined.get('last_seq')}, expected {missed[-1]['seq']}",
    )
    got = [(m.get("seq"), m.get("text")) for m in history]
    want = [(m["seq"], m["text"]) for m in missed]
    check(got == want, f"bob: history after since={last_seen} is {got}, expected exactly {want}")
    await ann.expect("presence", room=room, event="join", nick="bob")
    print(f"ok: rejoin with since={last_seen} returns exactly the {len(missed)} missed messages")

    live = await send_message(ann, [bob_again], room, "welcome back")
    check(live["seq"] == missed[-1]["seq"] + 1, f"ann: live message has seq {live['seq']}")
    ann.expect_no_more("after bob rejoined")
    bob_again.expect_no_more("after rejoining")
    print("ok: live messages continue after the rejoin")

    await check_history_paging(ann, room, live["seq"])
    await bob_again.close()


async def check_history_paging(peer: Peer, room: str, last_seq: int) -> None:
    await peer.send({"type": "history", "room": room, "before": last_seq, "limit": 2})
    page = await peer.expect("history", room=room)
    seqs = [m.get("seq") for m in page.get("messages", [])]
    check(seqs == [last_seq - 2, last_seq - 1], f"{peer.nick}: history before {last_seq} has seqs {seqs}")
    check(page.get("has_more") is True, f"{peer.nick}: history before {last_seq} has has_more {page.get('has_more')!r}")

    await peer.send({"type": "history", "room": room, "before": 2, "limit": 2})
    page = await peer.expect("history", room=room)
    seqs = [m.get("seq") for m in page.get("messages", [])]
    check(seqs == [1], f"{peer.nick}: history before 2 has seqs {seqs}")
    check(page.get("has_more") is False, f"{peer.nick}: history before 2 has has_more {page.get('has_more')!r}")
    print("ok: history pages backwards in increasing seq order with has_more")


async def run(url: str) -> None:
    room = f"py-{secrets.token_hex(4)}"
    print(f"using room {room} on {url}")
    ann, bob = await check_join_and_presence(url, room)
    try:
        first = await send_message(ann, [bob], room, "hello from ann, ünïcödé ✓")
        check(first["seq"] == 1, f"ann: first message of a new room has seq {first['seq']}")
        print("ok: message is acked to the sender and delivered to both members")

        reply = await check_idempotent_resend(ann, bob, room, first)
        await check_errors(ann, bob, room)
        await check_reconnect_since(url, ann, bob, room, reply["seq"])
    finally:
        for peer in (ann, bob):
            if peer.ws.state is not State.CLOSED:
                await asyncio.wait_for(peer.ws.close(1000), EVENT_TIMEOUT)
            peer.reader.cancel()


def main() -> int:
    parser = argparse.ArgumentParser(description="Check Pylon's chat protocol.")
    parser.add_argument("url", help="server URL on loopback, e.g. http://127.0.0.1:8080")
    args = parser.parse_args()

    try:
        url = websocket_url(args.url, "/ws/chat")
        asyncio.run(run(url))
    except UrlError as error:
        print(f"chat_client: {error}", file=sys.stderr)
        return 2
    except CheckFailed as error:
        print(f"chat_client: FAILED: {error}", file=sys.stderr)
        return 1
    except (OSError, InvalidHandshake) as error:
        print(f"chat_client: FAILED: cannot connect to {args.url}: {error!r}", file=sys.stderr)
        return 1
    except TimeoutError:
        print(f"chat_client: FAILED: timed out waiting for {args.url}", file=sys.stderr)
        return 1
    except ConnectionClosed as error:
        print(f"chat_client: FAILED: connection closed early: {error}", file=sys.stderr)
        return 1
    print("chat_client: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

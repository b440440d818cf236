"""The server's stream to its clients over a real WebSocket (a Unix socket in the test's own directory):
every event reaches every client complete, once, in seq order, one message per frame, whichever path it
took (one write per hand-over for a client that keeps up, the writer task behind a replay or a slow
reader), for events emitted in bursts from the training thread.
Also: the frames we write by hand read back through websockets' own frame parser."""
import asyncio
import json
import os
import random
import threading
import time

import pytest
import websockets
from websockets.legacy.framing import Frame

from pltrain.events import EventLog
from pltrain.protocol import TOKEN_HEADER, dumps
from pltrain.server import TrainerServer, text_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_a_hand_written_text_frame_reads_back_through_websockets(size):
    text = ("é" * size)[: size // 2] + "x" * (size - size // 2)  # multi-byte UTF-8 included
    data = text.encode("utf-8")

    async def parse():
        reader = asyncio.StreamReader()
        reader.feed_data(text_frame(data) + text_frame(b"{}"))
        reader.feed_eof()
        return [await Frame.read(reader.readexactly, mask=False) for _ in range(2)]

    first, second = asyncio.run(parse())
    assert first.fin and first.opcode == websockets.frames.Opcode.TEXT and first.data == data
    assert second.data == b"{}"


def _serve(tmp_path):
    """A TrainerServer on its own loop thread, as the trainer runs it: (loop, thread, log, server, socket path)."""
    log = EventLog(str(tmp_path))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server_log = []
    server = TrainerServer("tok", log, lambda cid, c: None, server_log.append)
    path = os.path.join(str(tmp_path), "s.sock")
    asyncio.run_coroutine_threadsafe(server.listen({"socket": path}), loop).result(10)
    log.loop = loop
    return loop, thread, log, server, path, server_log


async def _read_all(path, until_seq, delay=0.0, joined=None):
    """Connects with the token, subscribes from the start and reads until `until_seq`: the texts received."""
    got = []
    async with websockets.unix_connect(path, "ws://localhost/", extra_headers={TOKEN_HEADER: "tok"}, max_size=None) as ws:
        if joined is not None:
            joined.set()
        await ws.send(json.dumps({"type": "subscribe", "sinceSeq": -1}))
        async for message in ws:
            got.append(message)
            if delay and len(got) % 20 == 0:
                await asyncio.sleep(delay)  # a slow reader: its socket fills, the writer task takes over
            if json.loads(message)["seq"] == until_seq:
                return got
    return got


def test_every_event_reaches_every_client_complete_and_in_order_under_bursts(tmp_path):
    loop, thread, log, server, path, server_log = _serve(tmp_path)
    rng = random.Random(3)
    n = 3000
    last_seq = n - 1
    early_connected = threading.Event()
    results = {}

    def client(name, **kw):
        results[name] = asyncio.run(_read_all(path, last_seq, **kw))

    early = threading.Thread(target=client, args=("early",), kwargs={"joined": early_connected})
    early.start()
    assert early_connected.wait(10)
    # The early client is subscribed before the first event: wait until the server has its subscription.
    for _ in range(200):
        if log.listeners:
            break
        threading.Event().wait(0.01)
    assert log.listeners
    slow = late = None
    for i in range(n):
        # Mostly small metrics lines, some > 125 and > 65535 bytes (all three frame headers).
        size = 70_000 if i % 397 == 5 else rng.choice([10, 200, 2000])
        log.emit({"type": "metrics", "step": i, "pad": "x" * size})
        if i % 50 == 0:
            threading.Event().wait(0.001)  # bursts with pauses between
        if i == n // 3:
            slow = threading.Thread(target=client, args=("slow",), kwargs={"delay": 0.01})
            slow.start()
        if i == n // 2:
            late = threading.Thread(target=client, args=("late",))
            late.start()
    for t in (early, slow, late):
        t.join(60)
        assert not t.is_alive()
    expected = [dumps(e) for e in log.history]
    assert len(expected) == n
    for name in ("early", "slow", "late"):
        assert results[name] == expected, f"{name}: every event, complete, once, in seq order"
    assert not any("dropped" in m for m in server_log)
    asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    log.close()


def _raw_subscriber(path):
    """A client that does the WebSocket handshake and subscribes from the start by hand, then never reads
    again (a peer that stopped reading): its receive buffer and then the server's write buffer fill."""
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(path)
    s.sendall(("GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{TOKEN_HEADER}: tok\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)  # byte by byte: nothing after the response's head is read
    assert head.startswith(b"HTTP/1.1 101"), head
    payload = json.dumps({"type": "subscribe", "sinceSeq": -1}).encode()
    mask = b"\x01\x02\x03\x04"
    s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    return s


def test_a_client_that_stops_reading_is_dropped_within_two_heartbeats_one_that_reads_is_not(tmp_path, monkeypatch):
    """_Stream._send: websockets' send (and its keepalive ping) wait while the socket's buffer is full, so
    a peer that stopped reading was never dropped. Now a send that cannot drain within two heartbeats
    drops it. The heartbeat is 60 s for the keepalive (it cannot act during the test) and 0.5 s for the
    drain bound; 6.4 MB of history (under the 16 MiB queue limit) is replayed to two clients: the one that
    stopped reading is dropped within a bounded time, the one reading steadily (a 10 ms pause per
    message, ~2 s in all, longer than the bound but each wait far shorter) gets everything and stays."""
    from pltrain import server as server_module

    monkeypatch.setattr(server_module, "HEARTBEAT_S", 60.0)
    loop, thread, log, server, path, server_log = _serve(tmp_path)
    monkeypatch.setattr(server_module, "HEARTBEAT_S", 0.5)
    n = 200
    for i in range(n):
        log.emit({"type": "log", "level": "info", "message": f"{i} " + "x" * 32_000})
    stopped = _raw_subscriber(path)
    received = []
    still_open = []

    async def read_steadily():
        async with websockets.unix_connect(path, "ws://localhost/", extra_headers={TOKEN_HEADER: "tok"}, max_size=None) as ws:
            await ws.send(json.dumps({"type": "subscribe", "sinceSeq": -1}))
            async for message in ws:
                received.append(json.loads(message)["seq"])
                if received[-1] == n - 1:
                    break
                await asyncio.sleep(0.01)
            still_open.append(ws.open)

    reader = threading.Thread(target=lambda: asyncio.run(read_steadily()))
    reader.start()
    drop = "dropped a client that stopped reading (nothing drained for 1 s)"
    started = time.monotonic()
    while drop not in server_log and time.monotonic() - started < 15:
        time.sleep(0.05)
    assert drop in server_log, f"the client that stopped reading was not dropped in 15 s: {server_log}"
    # Its socket ends: what was buffered, then end of stream (or a reset).
    try:
        while stopped.recv(1 << 20):
            pass
    except ConnectionResetError:
        pass
    stopped.close()
    reader.join(60)
    assert not reader.is_alive()
    assert received == list(range(n)) and still_open == [True], "the reading client got every event and was not dropped"
    assert server_log.count(drop) == 1 and not [m for m in server_log if "dropped" in m and m != drop]
    asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    log.close()

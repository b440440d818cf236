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

"""The event log's hand-over to the server's loop: every event reaches a listener on the loop, in seq
order, with its JSON text, batched (far fewer loop wake-ups than events); a subscriber that joins in the
middle of a stream gets the history, then the live events, with no gap."""
import asyncio
import json
import os
import threading

from pltrain.events import EventLog
from pltrain.protocol import dumps


def _loop_thread():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    return loop, thread


def _on_loop(loop, fn):
    async def run():
        return fn()

    return asyncio.run_coroutine_threadsafe(run(), loop).result(10)


def test_every_event_reaches_a_loop_listener_in_order_with_batched_wakeups(tmp_path):
    log = EventLog(str(tmp_path))
    loop, thread = _loop_thread()
    log.loop = loop
    received, threads, handovers = [], set(), [0]
    hand_over = log._hand_over

    def counted():
        handovers[0] += 1
        hand_over()

    log._hand_over = counted

    def listener(event, text):
        threads.add(threading.get_ident())
        received.append((event["seq"], text))

    history, unsubscribe = _on_loop(loop, lambda: log.subscribe_since(-1, listener))
    assert history == []
    n = 3000
    for i in range(n):
        log.emit({"type": "metrics", "step": i, "loss": 1 / (i + 1)})
        if i % 500 == 0:  # the server logs from the loop's own thread meanwhile
            loop.call_soon_threadsafe(log.emit, {"type": "log", "level": "warn", "message": f"from the loop {i}"})
    done = threading.Event()
    loop.call_soon_threadsafe(lambda: loop.call_soon(done.set))
    assert done.wait(10)
    _on_loop(loop, lambda: None)  # whatever the loop's own emits scheduled has run
    seqs = [s for s, _ in received]
    assert seqs == list(range(n + n // 500)), "every event, once, in seq order"
    assert all(json.loads(text)["seq"] == s and text == dumps(log.history[s]) for s, text in received)
    assert threads == {thread.ident}, "listeners run on the loop's thread only"
    assert handovers[0] < len(received), "batched: fewer loop wake-ups than events"
    with open(os.path.join(str(tmp_path), "metrics.jsonl")) as f:
        on_disk = [json.loads(line)["seq"] for line in f]
    assert on_disk == [e["seq"] for e in log.history if e["type"] == "metrics"]
    unsubscribe()
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    log.close()


def test_a_subscriber_joining_mid_stream_gets_history_then_live_events_without_a_gap(tmp_path):
    log = EventLog(str(tmp_path))
    loop, thread = _loop_thread()
    log.loop = loop
    n = 2000
    joined = []

    def emitter():
        for i in range(n):
            log.emit({"type": "metrics", "step": i})

    worker = threading.Thread(target=emitter)
    worker.start()
    live = []
    # Joins while the worker emits; the history snapshot and the listener are taken atomically.
    history, unsubscribe = _on_loop(loop, lambda: log.subscribe_since(-1, lambda e, text: live.append(e["seq"])))
    joined.extend(e["seq"] for e in history)
    worker.join()
    _on_loop(loop, lambda: None)
    _on_loop(loop, lambda: None)
    # What a client's writer does: the replay, then live events past the last seq it sent.
    sent = joined[-1] if joined else -1
    stream = list(joined) + [s for s in live if s > sent]
    assert stream == list(range(n))
    unsubscribe()
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    log.close()


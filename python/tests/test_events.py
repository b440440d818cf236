"""The event log's hand-over to the server's loop: every event reaches a listener on the loop, in seq
order, with its JSON text, batched (far fewer loop wake-ups than events); a subscriber that joins in the
middle of a stream gets the history, then the live events, with no gap."""
import asyncio
import json
import os
import threading
import time

from pltrain.events import STREAM_POLL_S, EventLog
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


def _handed_over(log, loop):
    """Waits until the loop has handed over every event emitted so far: a metrics line may wait for the
    loop's next poll (STREAM_POLL_S) while metrics stream."""
    for _ in range(int(2 / STREAM_POLL_S)):
        _on_loop(loop, lambda: None)
        if _on_loop(loop, lambda: not log._outbox):
            _on_loop(loop, lambda: None)
            return
        time.sleep(STREAM_POLL_S)
    raise AssertionError("events still waiting after 2 s")


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
    _handed_over(log, loop)
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
    _handed_over(log, loop)
    # What a client's writer does: the replay, then live events past the last seq it sent.
    sent = joined[-1] if joined else -1
    stream = list(joined) + [s for s in live if s > sent]
    assert stream == list(range(n))
    unsubscribe()
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    log.close()



def test_streaming_metrics_are_collected_by_the_loop_and_other_events_go_at_once(tmp_path):
    """While metrics lines stream, the loop collects them on its own poll (STREAM_POLL_S) instead of being
    woken by the training thread for each; any other event still wakes it at once and takes the waiting
    lines along; a poll that finds nothing ends the polling, and the next line wakes the loop again. Every
    event arrives once, in order."""
    log = EventLog(str(tmp_path))
    loop, thread = _loop_thread()

    class CountingLoop:
        def __init__(self):
            self.wakeups = 0

        def call_soon_threadsafe(self, *args):
            self.wakeups += 1
            return loop.call_soon_threadsafe(*args)

        def call_later(self, *args):
            return loop.call_later(*args)

    counting = log.loop = CountingLoop()
    received = []
    _on_loop(loop, lambda: log.subscribe_since(-1, lambda e, text: received.append(e["seq"])))
    n = 400
    for i in range(n):
        log.emit({"type": "metrics", "step": i})
        time.sleep(STREAM_POLL_S / 5)  # a step much shorter than the poll
    assert counting.wakeups < n / 2, f"{counting.wakeups} wake-ups for {n} streaming lines"
    log.emit({"type": "log", "level": "info", "message": "now"})
    _on_loop(loop, lambda: None)
    assert received == list(range(n + 1)), "a log goes at once, with the lines that waited, in order"
    for _ in range(int(2 / STREAM_POLL_S)):
        if _on_loop(loop, lambda: log._poll) is None:
            break  # an empty poll ended the polling
        time.sleep(STREAM_POLL_S)
    assert _on_loop(loop, lambda: log._poll) is None, "an empty poll ends the polling"
    before = counting.wakeups
    log.emit({"type": "metrics", "step": n})
    _on_loop(loop, lambda: None)
    assert counting.wakeups == before + 1 and received == list(range(n + 2)), "the first line after a pause wakes the loop"
    _on_loop(loop, log.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)

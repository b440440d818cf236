"""The run's event history (src/trainer/events.ts): one seq counter, an in-memory list for replay,
durable JSONL on disk (metrics, acks, and the rest), one write() per line."""
import json
import os
import threading

from .private import open_private
from .protocol import RUN_FILES, dumps, dumps_flat_metrics

FILES = (RUN_FILES["metrics"], RUN_FILES["commands"], RUN_FILES["events"])
# While metrics lines stream, the server's loop collects them this often: the most latency a line may
# gain (10 ms; a line after a pause goes at once). Each collection is a burst of the loop's work (and
# the client's) beside the training thread; at a 4.5 ms CPU step 10 ms cut the attached overhead by
# about a third against 5 ms (docs/performance.md, "PyTorch engine: instrumentation, third pass").
STREAM_POLL_S = 0.010


def _file_of(event):
    t = event["type"]
    return RUN_FILES["metrics"] if t == "metrics" else RUN_FILES["commands"] if t == "ack" else RUN_FILES["events"]


def _end_of_batch(listener):
    """A listener may take a hand-over's events as one batch: end_of_batch() after the last (server._Stream
    writes them to its socket in one go)."""
    end = getattr(listener, "end_of_batch", None)
    if end is not None:
        end()


class EventLog:
    def __init__(self, run_dir):
        self.run_dir = run_dir
        # Events are emitted on the training thread (and by the server); listeners run on the event
        # loop's thread, so a slow client never holds a step up. Events for the loop wait in `_outbox`
        # and one call_soon_threadsafe hands over all that piled up before the loop got to them: one
        # wake-up of the loop per batch, not per event. After handing over a metrics line the loop polls
        # again STREAM_POLL_S later, and keeps polling while each poll finds lines: while they stream
        # faster than that, the training thread wakes the loop no more (its Python waited for the GIL
        # while the loop worked). With slower steps a poll finds nothing and the next line wakes it.
        self._lock = threading.RLock()
        self.loop = None
        self._outbox = []
        self._handoff_pending = False
        self._poll = None  # the loop's timer that collects streaming metrics, while armed
        self.next = 0
        self.history = []
        self.listeners = set()
        self._fds = {}

    @classmethod
    def resume(cls, run_dir, last_seq, checkpoint_acks=()):
        """Continues a run after a crash: events up to last_seq (the checkpoint's) stay; later metrics
        and acks describe steps that will be redone and move to *.discarded.jsonl (kept, not lost).
        hello/state/log stay. Seqs are never reused."""
        log = cls(run_dir)
        kept = []
        kept_ack_seqs = set()
        max_seq = last_seq
        for name in FILES:
            full = os.path.join(run_dir, name)
            if not os.path.exists(full):
                continue
            keep_lines, drop_lines = [], []
            with open(full, encoding="utf-8", errors="replace") as f:
                for line in f:
                    line = line.rstrip("\n")
                    if not line.strip():
                        continue
                    try:
                        e = json.loads(line)
                        max_seq = max(max_seq, e["seq"])
                    except (ValueError, KeyError, TypeError):
                        drop_lines.append(line)  # the truncated last line of a kill -9
                        continue
                    if e["seq"] <= last_seq or name == RUN_FILES["events"]:
                        keep_lines.append(line)
                        kept.append(e)
                        if e.get("type") == "ack":
                            kept_ack_seqs.add(e["seq"])
                    else:
                        drop_lines.append(line)
            tmp = f"{full}.resume-{os.getpid()}"
            fd = open_private(tmp, "truncate")
            try:
                os.write(fd, "".join(l + "\n" for l in keep_lines).encode("utf-8"))
            finally:
                os.close(fd)
            os.replace(tmp, full)
            if drop_lines:
                fd = open_private(full[: -len(".jsonl")] + ".discarded.jsonl", "append")
                try:
                    os.write(fd, "".join(l + "\n" for l in drop_lines).encode("utf-8"))
                finally:
                    os.close(fd)
        # Acks the checkpoint holds but a kill kept off the disk (between the checkpoint and the
        # append): the command's effect was saved, so its ack is recorded now, once.
        for ack in checkpoint_acks:
            if ack["seq"] > last_seq or ack["seq"] in kept_ack_seqs:
                continue
            fd = open_private(os.path.join(run_dir, RUN_FILES["commands"]), "append")
            try:
                os.write(fd, (dumps(ack) + "\n").encode("utf-8"))
            finally:
                os.close(fd)
            kept.append(ack)
            max_seq = max(max_seq, ack["seq"])
        log.history = sorted(kept, key=lambda e: e["seq"])
        log.next = max_seq + 1
        return log

    @property
    def last_seq(self):
        return self.next - 1

    def emit(self, partial):
        with self._lock:
            event = dict(partial)
            event["seq"] = self.next
            self.next += 1
            text = dumps_flat_metrics(event) or dumps(event)
            name = _file_of(event)
            fd = self._fds.get(name)
            if fd is None:
                # Opened owner-only without following a planted symlink, and kept: no descriptor per event.
                fd = self._fds[name] = open_private(os.path.join(self.run_dir, name), "append")
            os.write(fd, (text + "\n").encode("utf-8"))
            self.history.append(event)
            if not self.listeners:
                return event
            if self.loop is None:
                listeners = list(self.listeners)
            else:
                listeners = None
                self._outbox.append((event, text))
                # A metrics line while the loop polls waits for its poll (at most STREAM_POLL_S);
                # anything else goes at once, taking whatever waits with it.
                wake = not self._handoff_pending and not (self._poll is not None and event["type"] == "metrics")
                if wake:
                    self._handoff_pending = True
        if listeners is not None:
            for listener in listeners:
                listener(event, text)
                _end_of_batch(listener)
        elif wake:
            self.loop.call_soon_threadsafe(self._hand_over)
        return event

    def _hand_over(self):
        """On the loop's thread: every event in the outbox, in seq order, to every listener (each a
        client's, which skips what its replay already sent by seq), then end_of_batch() to those that
        have it."""
        with self._lock:
            batch, self._outbox = self._outbox, []
            self._handoff_pending = False
            listeners = list(self.listeners)
            # The one place the poll is armed: metrics lines are streaming, so collect the next ones.
            if self._poll is None and any(e["type"] == "metrics" for e, _ in batch):
                self._poll = self.loop.call_later(STREAM_POLL_S, self._collect)
        for event, text in batch:
            for listener in listeners:
                listener(event, text)
        for listener in listeners:
            _end_of_batch(listener)

    def _collect(self):
        """The loop's poll while metrics stream: hands over what piled up (which polls again if it held a
        metrics line); a poll that finds nothing ends the polling (the next metrics line wakes the loop)."""
        with self._lock:
            self._poll = None
            if not self._outbox:
                return
        self._hand_over()

    def emit_acks(self, partials, before):
        """Emits `partials` (acks) with consecutive seqs, first calling before(acks_with_seqs) with the
        seqs they will take, all under the log's lock: nothing else can take those seqs in between
        (a durable checkpoint holding the acks is written in `before`)."""
        with self._lock:
            first = self.next
            before([dict(p, seq=first + i) for i, p in enumerate(partials)])
            return [self.emit(p) for p in partials]

    def subscribe_since(self, since_seq, listener):
        """Attaches `listener(event, its JSON text)` and returns every event with seq > since_seq,
        atomically: each later event reaches the listener (one emitted meanwhile may reach it too;
        callers skip by seq)."""
        with self._lock:
            self.listeners.add(listener)
            return self.since(since_seq), lambda: self.listeners.discard(listener)

    def since(self, since_seq):
        """Every event with seq > since_seq, in order."""
        # history is sorted by seq: bisect by hand.
        lo, hi = 0, len(self.history)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.history[mid]["seq"] <= since_seq:
                lo = mid + 1
            else:
                hi = mid
        return self.history[lo:]

    def subscribe(self, listener):
        self.listeners.add(listener)
        return lambda: self.listeners.discard(listener)

    def close(self):
        with self._lock:
            if self._poll is not None:
                self._poll.cancel()
                self._poll = None
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}

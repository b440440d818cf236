"""The run's event history (src/trainer/events.ts): one seq counter, an in-memory list for replay,
durable JSONL on disk (metrics, acks, and the rest), one write() per line."""
import json
import os
import threading

from .protocol import RUN_FILES, dumps

FILES = (RUN_FILES["metrics"], RUN_FILES["commands"], RUN_FILES["events"])


def _file_of(event):
    t = event["type"]
    return RUN_FILES["metrics"] if t == "metrics" else RUN_FILES["commands"] if t == "ack" else RUN_FILES["events"]


class EventLog:
    def __init__(self, run_dir):
        self.run_dir = run_dir
        # Events are emitted on the training thread (and by the server); listeners run on the event
        # loop's thread (call_soon_threadsafe), so a slow client never holds a step up.
        self._lock = threading.Lock()
        self.loop = None
        self.next = 0
        self.history = []
        self.listeners = set()
        self._fds = {}

    @classmethod
    def resume(cls, run_dir, last_seq):
        """Continues a run after a crash: events up to last_seq (the checkpoint's) stay; later metrics
        and acks describe steps that will be redone and move to *.discarded.jsonl (kept, not lost).
        hello/state/log stay. Seqs are never reused."""
        log = cls(run_dir)
        kept = []
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
                    else:
                        drop_lines.append(line)
            tmp = f"{full}.resume-{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write("".join(l + "\n" for l in keep_lines))
            os.replace(tmp, full)
            if drop_lines:
                with open(full[: -len(".jsonl")] + ".discarded.jsonl", "a", encoding="utf-8") as f:
                    f.write("".join(l + "\n" for l in drop_lines))
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
            line = (dumps(event) + "\n").encode("utf-8")
            name = _file_of(event)
            fd = self._fds.get(name)
            if fd is None:
                fd = self._fds[name] = os.open(os.path.join(self.run_dir, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(fd, line)
            self.history.append(event)
            listeners = list(self.listeners)
        for listener in listeners:
            if self.loop is not None:
                self.loop.call_soon_threadsafe(listener, event)
            else:
                listener(event)
        return event

    def subscribe_since(self, since_seq, listener):
        """Attaches `listener` and returns every event with seq > since_seq, atomically: each later
        event reaches the listener (one emitted meanwhile may reach it too; callers skip by seq)."""
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
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}

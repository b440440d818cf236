"""Steering rules, applied only between steps (src/trainer/steering.ts, the same rules and reasons)."""
import threading

from .protocol import alpha_problem


# Commands whose applied effect a resume restores (α, frozen units): their ack goes out only once a
# checkpoint holds the effect. Pause, resume and stop are not restored (a resumed run runs).
DURABLE_KINDS = {"setAlpha", "freeze", "unfreeze"}
# How many decided command ids a checkpoint keeps for duplicate detection across a resume.
RECENT_IDS_KEPT = 1000


class SteeringState:
    def __init__(self, units, alpha, frozen=(), unit_name="unit"):
        self.units, self.alpha, self.unit_name = units, alpha, unit_name
        self.paused = False
        self.stop_requested = False
        self.frozen = set(frozen)
        self.pruned = set()
        self._queue = []
        self._seen = {}  # insertion-ordered: the latest ids are the last
        # Commands arrive on the server's thread; the training thread drains them between steps.
        self._arrived = threading.Condition()

    def enqueue(self, command_id, command):
        """Queues a command (any thread); it takes effect at the next step boundary (drain)."""
        with self._arrived:
            self._queue.append((command_id, command))
            self._arrived.notify_all()

    def wait_for_command(self, timeout=None):
        """Blocks until a command is queued (used while paused)."""
        with self._arrived:
            self._arrived.wait_for(lambda: self._queue, timeout)

    def drain(self):
        """Applies every queued command in arrival order; one decision (id, command, status, reason) each."""
        if not self._queue:
            # The common step boundary: nothing arrived. Reading the list needs no lock (a command
            # appended just after this read is drained at the next boundary, as if it came a step later).
            return []
        with self._arrived:
            queued, self._queue = self._queue, []
        out = []
        for cid, c in queued:
            status, reason = self._apply(cid, c)
            out.append((cid, c, status, reason))
        return out

    def remember(self, ids):
        """Command ids decided before a resume: one resent gets "duplicate", not a second application."""
        for cid in ids:
            self._seen[cid] = None

    def recent_ids(self, limit=RECENT_IDS_KEPT):
        return list(self._seen)[-limit:]

    def trainable(self):
        return [i for i in range(self.units) if i not in self.frozen and i not in self.pruned]

    def _check_unit(self, e):
        if not isinstance(e, int) or e < 0 or e >= self.units:
            return f"{self.unit_name} {e} does not exist (the model has {self.units}: 0…{self.units - 1})"
        return None

    def _apply(self, cid, c):
        if cid in self._seen:
            return "rejected", f"duplicate command id {cid}"
        self._seen[cid] = None
        if self.stop_requested:
            return "rejected", "the run is stopping"
        k = c["kind"]
        if k == "pause":
            if self.paused:
                return "rejected", "already paused"
            self.paused = True
        elif k == "resume":
            if not self.paused:
                return "rejected", "not paused"
            self.paused = False
        elif k == "stop":
            self.stop_requested = True
            self.paused = False
        elif k == "setAlpha":
            bad = alpha_problem(c["alpha"])
            if bad:
                return "rejected", f"{bad} (got {c['alpha']})"
            self.alpha = c["alpha"]
        elif k == "freeze":
            bad = self._check_unit(c["unit"])
            if bad:
                return "rejected", bad
            u = c["unit"]
            if u in self.pruned:
                return "rejected", f"{self.unit_name} {u} is pruned"
            if u in self.frozen:
                return "rejected", f"{self.unit_name} {u} is already frozen"
            if len(self.trainable()) <= 1:
                return "rejected", f"cannot freeze every {self.unit_name}: at least one must stay trainable"
            self.frozen.add(u)
        elif k == "unfreeze":
            bad = self._check_unit(c["unit"])
            if bad:
                return "rejected", bad
            if c["unit"] not in self.frozen:
                return "rejected", f"{self.unit_name} {c['unit']} is not frozen"
            self.frozen.discard(c["unit"])
        return "applied", None

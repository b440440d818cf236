"""The run directory: announcement (run.json, rewritten atomically), token (0600), config snapshot."""
import json
import os
import secrets
import time

from .private import ensure_private_dir, open_private, write_private_atomic
from .protocol import PROTOCOL_VERSION, RUN_FILES, TOKEN_ENV

LOCK_FILE = "lock"
# What the extension puts in a run directory before the trainer starts.
PRE_START_FILES = {"launch.json", RUN_FILES["log"]}


class RunDirRefused(Exception):
    """A run directory in use or already used: the user's mistake, said in one line (exit 2)."""


def prepare_run_dir(run_dir, resume):
    """Owner-only, and for a new run fresh: a run directory is never reused (runDir.ts prepareRunDir)."""
    ensure_private_dir(run_dir)
    if resume:
        return
    taken = sorted(n for n in os.listdir(run_dir) if n not in PRE_START_FILES)
    if taken:
        more = ", …" if len(taken) > 4 else ""
        raise RunDirRefused(f"{run_dir} already holds {', '.join(taken[:4])}{more}: a run directory is never reused. Choose a new --run-dir, or continue that run with --resume {run_dir}")


def _start_time(pid):
    """When a process started (Linux: /proc/<pid>/stat field 22), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return stat[stat.rindex(")") + 2:].split(" ")[19]
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _read_lock(path):
    try:
        with open(path) as f:
            v = json.load(f)
        return v if isinstance(v.get("pid"), int) else None
    except (OSError, ValueError, AttributeError):
        return None


class RunDirLock:
    """The exclusive lock on a run directory (runDir.ts RunDirLock): `lock` created O_EXCL naming our pid
    and start time; a live holder is refused by pid, a dead one's lock taken over."""

    def __init__(self, path):
        self.path = path
        self.released = False

    @classmethod
    def acquire(cls, run_dir):
        path = os.path.join(run_dir, LOCK_FILE)
        mine = json.dumps({"pid": os.getpid(), "startTime": _start_time(os.getpid())}) + "\n"
        for _ in range(2):
            try:
                fd = open_private(path, "create")
            except FileExistsError:
                holder = _read_lock(path)
                if holder and _alive(holder["pid"]) and (holder.get("startTime") is None or holder.get("startTime") == _start_time(holder["pid"])):
                    raise RunDirRefused(f"{run_dir} is in use by the trainer with pid {holder['pid']}: one trainer per run directory")
                os.unlink(path)  # a dead owner's lock (or anything planted there): take it over
                continue
            try:
                os.write(fd, mine.encode())
            finally:
                os.close(fd)
            return cls(path)
        raise RunDirRefused(f"{run_dir}: could not take the run directory's lock (another trainer took it at the same moment)")

    def release(self):
        if self.released:
            return
        self.released = True
        holder = _read_lock(self.path)
        if holder and holder["pid"] == os.getpid():
            try:
                os.unlink(self.path)
            except OSError:
                pass


def now_ms():
    return int(time.time() * 1000)


def establish_token(run_dir, env=os.environ):
    """The token from the extension (environment) or a fresh 256-bit one; stored owner-only."""
    given = env.get(TOKEN_ENV, "")
    token = given if len(given) >= 32 else secrets.token_hex(32)
    write_private_atomic(os.path.join(run_dir, RUN_FILES["token"]), token + "\n")
    return token


def write_json_atomic(path, value, durable=False):
    write_private_atomic(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n", durable)


class RunAnnouncement:
    def __init__(self, run_dir, run_id, total_steps):
        self.run_dir = run_dir
        t = now_ms()
        # Where it listens (socket, or host + port) is added once it does.
        self.info = {"protocol": PROTOCOL_VERSION, "runId": run_id, "pid": os.getpid(), "state": "starting", "startedAt": t, "updatedAt": t, "step": 0, "totalSteps": total_steps}
        # A descriptor held in reserve: when descriptors run out, `final` frees it so run.json can
        # still say `failed` and why.
        try:
            self.reserve_fd = os.open(os.devnull, os.O_RDONLY)
        except OSError:
            self.reserve_fd = None

    def final(self, **patch):
        if self.reserve_fd is not None:
            os.close(self.reserve_fd)
            self.reserve_fd = None
        self.update(**patch)

    def update(self, **patch):
        self.info.update(patch)
        self.info["updatedAt"] = now_ms()
        write_json_atomic(os.path.join(self.run_dir, RUN_FILES["runInfo"]), self.info)

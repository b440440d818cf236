"""The run directory: announcement (run.json, rewritten atomically), token (0600), config snapshot."""
import json
import os
import secrets
import time

from .protocol import PROTOCOL_VERSION, RUN_FILES, TOKEN_ENV


def now_ms():
    return int(time.time() * 1000)


def establish_token(run_dir, env=os.environ):
    """The token from the extension (environment) or a fresh 256-bit one; stored owner-only."""
    given = env.get(TOKEN_ENV, "")
    token = given if len(given) >= 32 else secrets.token_hex(32)
    path = os.path.join(run_dir, RUN_FILES["token"])
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)  # an existing file keeps its old mode on open
    return token


def write_json_atomic(path, value):
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


class RunAnnouncement:
    def __init__(self, run_dir, run_id, total_steps):
        self.run_dir = run_dir
        t = now_ms()
        self.info = {"protocol": PROTOCOL_VERSION, "runId": run_id, "pid": os.getpid(), "host": "127.0.0.1", "port": 0, "state": "starting", "startedAt": t, "updatedAt": t, "step": 0, "totalSteps": total_steps}

    def update(self, **patch):
        self.info.update(patch)
        self.info["updatedAt"] = now_ms()
        write_json_atomic(os.path.join(self.run_dir, RUN_FILES["runInfo"]), self.info)

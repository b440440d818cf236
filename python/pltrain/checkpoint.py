"""Checkpoints in the TypeScript trainer's format (src/trainer/checkpoint.ts: manifest.json + one
float32 tensors.bin), written to a fresh folder and swapped in by rename, so a crash mid-write leaves
the previous one intact. Keys: `var:<name>` for weights, `opt:<group>:<i>` for optimizer slots."""
import json
import os
import shutil

import numpy as np

from .private import PRIVATE_DIR_MODE, fsync_dir, open_private
from .protocol import CHECKPOINT_DIR, CHECKPOINT_DIRS, CHECKPOINT_MANIFEST


def save_checkpoint(run_dir, progress, tensors):
    """`tensors`: (key, float32 numpy array) pairs; `progress`: step, seq, alpha, frozen, pruned, time (, pruner)."""
    final = os.path.join(run_dir, CHECKPOINT_DIR)
    fresh, old = final + ".new", final + ".old"
    shutil.rmtree(fresh, ignore_errors=True)
    os.mkdir(fresh, PRIVATE_DIR_MODE)

    def write(name, pieces):
        fd = open_private(os.path.join(fresh, name), "create")
        try:
            for piece in pieces:
                os.write(fd, piece)
            os.fsync(fd)
        finally:
            os.close(fd)

    entries, offset, parts = [], 0, []
    for key, a in tensors:
        a = np.ascontiguousarray(a, dtype=np.float32)
        entries.append({"key": key, "shape": list(a.shape), "offset": offset, "length": int(a.size)})
        parts.append(a.tobytes())
        offset += int(a.size)
    write("tensors.bin", parts)
    manifest = {"format": "pl-trainer-checkpoint", "version": 1, **progress, "tensors": entries}
    write(CHECKPOINT_MANIFEST, [json.dumps(manifest).encode("utf-8")])
    fsync_dir(fresh)
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(final):
        os.rename(final, old)
    os.rename(fresh, final)
    shutil.rmtree(old, ignore_errors=True)
    # Durable before anything that relies on it (an ack) is written.
    fsync_dir(run_dir)


def load_checkpoint(run_dir):
    """(progress, {key: array}) of the newest complete checkpoint, or None."""
    for d in (os.path.join(run_dir, x) for x in CHECKPOINT_DIRS):
        try:
            with open(os.path.join(d, CHECKPOINT_MANIFEST), encoding="utf-8") as f:
                manifest = json.load(f)
            floats = np.fromfile(os.path.join(d, "tensors.bin"), dtype=np.float32)
        except (OSError, ValueError):
            continue
        if manifest.get("format") != "pl-trainer-checkpoint" or manifest.get("version") != 1:
            continue
        tensors = {t["key"]: floats[t["offset"]:t["offset"] + t["length"]].reshape(t["shape"]).copy() for t in manifest["tensors"]}
        progress = {k: manifest[k] for k in ("step", "seq", "alpha", "frozen", "pruned", "time")}
        for optional in ("pruner", "acks", "commandIds"):
            if optional in manifest:
                progress[optional] = manifest[optional]
        return progress, tensors
    return None

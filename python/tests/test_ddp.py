"""DDP (issue 13, item 2): two ranks on gloo/CPU, launched with MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE
(torchrun crashes under Debian's Python 3.11), steered over the real protocol from rank 0's socket. Every
command takes effect at the same step on both ranks, and the parameters stay bit-identical across ranks
after the α change, the freeze and a pause/resume; the frozen head does not move at all."""
import asyncio
import json
import os
import socket
import subprocess
import sys

from steer_client import SteerClient, read_listening

HERE = os.path.dirname(__file__)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_apply_every_command_at_the_same_step(tmp_path):
    run_dir = str(tmp_path / "run")
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "RANK": str(rank), "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, os.path.join(HERE, "ddp_worker.py"), str(tmp_path), run_dir], env=env, stdout=subprocess.PIPE if rank == 0 else subprocess.DEVNULL))
    try:
        listening = read_listening(procs[0])
        assert listening["runDir"] == run_dir

        async def steer():
            async with SteerClient(run_dir) as c:
                await c.wait_for(lambda e: e.get("type") == "metrics" and e["step"] >= 3)
                acks = {"alpha": await c.command({"kind": "setAlpha", "alpha": 0.2})}
                await c.wait_for(lambda e: e.get("type") == "metrics" and e["step"] >= acks["alpha"]["step"] + 3)
                acks["freeze"] = await c.command({"kind": "freeze", "unit": 1})
                await c.wait_for(lambda e: e.get("type") == "metrics" and e["step"] >= acks["freeze"]["step"] + 3)
                acks["pause"] = await c.command({"kind": "pause"})
                await c.wait_for(lambda e: e.get("type") == "state" and e["state"] == "paused")
                await asyncio.sleep(1.5)  # more than one "still paused" tick to rank 1
                acks["resume"] = await c.command({"kind": "resume"})
                await c.wait_for(lambda e: e.get("type") == "metrics" and e["step"] >= acks["resume"]["step"] + 3)
                acks["stop"] = await c.command({"kind": "stop"})
                await c.wait_for(lambda e: e.get("type") == "state" and e["state"] == "stopped")
                return acks, c.events

        acks, events = asyncio.run(asyncio.wait_for(steer(), 240))
        for p in procs:
            try:
                assert p.wait(60) == 0
            except subprocess.TimeoutExpired:
                p.send_signal(10)
                import time; time.sleep(2)
                raise
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(a["status"] == "applied" for a in acks.values()), acks
    assert acks["pause"]["step"] == acks["resume"]["step"]  # no step while paused
    records = []
    for rank in (0, 1):
        with open(tmp_path / f"rank{rank}.json") as f:
            records.append(json.load(f))
    assert records[0] == records[1]  # α, frozen set and every parameter's digest, step by step
    by_step = {r["step"]: r for r in records[0]}
    a, f = acks["alpha"]["step"], acks["freeze"]["step"]
    assert by_step[a]["alpha"] == 0.2 and (a == 1 or by_step[a - 1]["alpha"] == 0.0)
    assert by_step[f]["frozen"] == [1] and by_step[f - 1]["frozen"] == []
    frozen_weights = {by_step[s]["params"]["head1.weight"] for s in by_step if s >= f}
    assert len(frozen_weights) == 1  # the frozen head is bit-identical from its freeze to the end
    assert by_step[f]["params"]["head0.weight"] != records[0][-1]["params"]["head0.weight"]  # the others train on
    assert records[0][-1]["step"] == acks["stop"]["step"]
    hello = next(e for e in events if e.get("type") == "hello")
    assert hello["unitCount"] == 2 and hello["unitName"] == "head"

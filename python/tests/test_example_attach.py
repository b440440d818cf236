"""examples/train_attach.py (issue 13, item 3) driven over the protocol as the panel does: pause, α,
freeze, resume, stop, on the built-in dataset. The script is run as the extension runs it (the package
on PYTHONPATH, the run directory in PLTRAIN_RUN_DIR) and ends with exit 0 and state `stopped`."""
import asyncio
import json
import os
import subprocess
import sys

from steer_client import SteerClient, read_listening

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_the_example_script_is_steered_over_the_protocol(tmp_path):
    run_dir = str(tmp_path / "run")
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "python"), "PLTRAIN_RUN_DIR": run_dir, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "examples", "train_attach.py"), "--steps", "100000"], env=env, stdout=subprocess.PIPE, cwd=str(tmp_path))
    try:
        assert read_listening(proc)["runDir"] == run_dir

        async def steer():
            async with SteerClient(run_dir) as c:
                await c.wait_for(lambda e: e.get("type") == "metrics" and e["step"] >= 2)
                acks = {"pause": await c.command({"kind": "pause"})}
                await c.wait_for(lambda e: e.get("type") == "state" and e["state"] == "paused")
                acks["alpha"] = await c.command({"kind": "setAlpha", "alpha": 0.05})
                acks["freeze"] = await c.command({"kind": "freeze", "unit": 2})
                acks["bad"] = await c.command({"kind": "freeze", "unit": 9})
                acks["resume"] = await c.command({"kind": "resume"})
                m = await c.wait_for(lambda e: e.get("type") == "metrics" and "units" in e and e["step"] > acks["resume"]["step"], 120)
                acks["stop"] = await c.command({"kind": "stop"})
                await c.wait_for(lambda e: e.get("type") == "state" and e["state"] == "stopped")
                return acks, m, c.events

        acks, monitored, events = asyncio.run(asyncio.wait_for(steer(), 240))
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    paused_at = acks["pause"]["step"]
    # Every command sent while paused takes effect at the step the run paused at.
    assert [acks[k]["step"] for k in ("alpha", "freeze", "resume")] == [paused_at] * 3
    assert acks["bad"]["status"] == "rejected" and "expert 9 does not exist" in acks["bad"]["reason"]
    assert all(acks[k]["status"] == "applied" for k in ("pause", "alpha", "freeze", "resume", "stop"))
    assert monitored["alpha"] == 0.05 and [u["frozen"] for u in monitored["units"]] == [False, False, True, False]
    assert all(0 <= u["share"] <= 1 for u in monitored["units"]) and abs(sum(u["share"] for u in monitored["units"]) - 1) < 1e-9
    hello = next(e for e in events if e.get("type") == "hello")
    assert hello["unitCount"] == 4 and hello["unitName"] == "expert" and hello["protocol"] == 2
    with open(os.path.join(run_dir, "run.json")) as f:
        assert json.load(f)["state"] == "stopped"

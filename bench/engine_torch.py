"""The PyTorch engine against a plain PyTorch loop of the same model, in one run (no Node needed).

Reference MoE shape (8 experts × (256 ReLU → 10), softmax gate, batch 128, cross-entropy, Adam) on the
built-in data (14×14 = 196 inputs: the 784-input Fashion-MNIST files are not on every box). Measured:
  plain     a plain PyTorch loop of pltrain's MoeMlp: forward, loss, backward, Adam, loss.item()
  engine    `python -m pltrain` itself (WebSocket served, metrics streamed to metrics.jsonl, commands
            checked at every step boundary), α = 0, κ monitoring off (monitor.every beyond the run)
  monitor   the same at the default monitoring (every 10 steps, probe 16), α = 0
  default   the same at the default α (0.01: every step measures κ in its graph for the regularizer)
Times are per step over the last 80 % of each run (start-up excluded); the engine's from its own
metrics.jsonl timestamps. The plain loop runs before and after the engine runs; its mean is the base.
Also checks that κ measured on CUDA matches the CPU figures on the same weights (--device cuda).
usage: python3 bench/engine_torch.py [--device cpu|cuda] [--steps N] [--threads N]
Prints progress on stderr and one JSON line on stdout."""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))

import torch  # noqa: E402

from pltrain import config as cfg  # noqa: E402
from pltrain.data import batches, load_builtin  # noqa: E402
from pltrain.models import MoeMlp  # noqa: E402
from pltrain.train import Measurer  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--device", default="cpu")
p.add_argument("--steps", type=int, default=300)
p.add_argument("--threads", type=int, default=0)
a = p.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
device = torch.device(a.device)
MODEL = {"experts": 8, "hiddenUnits": 256}
BATCH = 128
log = lambda m: print(f"[engine_torch] {m}", file=sys.stderr, flush=True)


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_loop(steps):
    data = load_builtin()
    config = cfg.resolve({"engine": "pytorch", "model": MODEL})
    model = MoeMlp(data.features, data.classes, config, torch.Generator().manual_seed(1)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=0.003, eps=1e-7)
    xs, ys = torch.from_numpy(data.train_x).to(device), torch.from_numpy(data.train_y).to(device)
    order = batches(xs.shape[0], BATCH, 1)
    start = steps // 5
    for i in range(steps):
        if i == start:
            sync()
            t0 = time.perf_counter()
        idx = torch.from_numpy(next(order)).to(device)
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(xs[idx]), ys[idx])
        loss.backward()
        opt.step()
        loss.item()  # what any loop that logs its loss pays
    sync()
    return (time.perf_counter() - t0) * 1000 / (steps - start)


def engine(steps, alpha, every):
    with tempfile.TemporaryDirectory() as tmp:
        conf = os.path.join(tmp, "bench.pltrain.json")
        with open(conf, "w") as f:
            json.dump({"name": "bench", "engine": "pytorch", "device": a.device, "steps": steps, "batchSize": BATCH, "alpha": alpha, "model": MODEL, "monitor": {"every": every}, "checkpointEvery": 0}, f)
        env = dict(os.environ, PYTHONPATH=os.path.join(HERE, "..", "python"))
        if a.threads:
            env["OMP_NUM_THREADS"] = str(a.threads)
        r = subprocess.run([sys.executable, "-m", "pltrain", "--config", conf, "--run-dir", os.path.join(tmp, "run")], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"the engine failed: {r.stderr.strip().splitlines()[-1:] or r.stdout[-500:]}")
        with open(os.path.join(tmp, "run", "metrics.jsonl")) as f:
            times = {m["step"]: m["time"] for m in map(json.loads, f)}
        with open(os.path.join(tmp, "run", "events.jsonl")) as f:
            backend = next(e["backend"] for e in map(json.loads, f) if e["type"] == "hello")
    start = steps // 5
    return (times[steps] - times[start]) / (steps - start), backend


def kappa_cpu_vs_cuda():
    """κ per expert (where measurable) and the model's κ of the same weights and probe, on the CPU and on CUDA: the largest relative difference."""
    data = load_builtin()
    config = cfg.resolve({"engine": "pytorch", "model": MODEL})
    out = {}
    for dev in ("cpu", "cuda"):
        model = MoeMlp(data.features, data.classes, config, torch.Generator().manual_seed(7)).to(dev)
        m = Measurer(model, torch.from_numpy(data.train_x[:16]).to(dev), torch.from_numpy(data.train_y[:16]), 1e-6)
        units = m.measure(set(), set(), list(range(MODEL["experts"])))
        out[dev] = {"units": units, "model": m.model_kappa}
    pairs = [(c[k], g[k]) for c, g in zip(out["cpu"]["units"], out["cuda"]["units"]) for k in ("mu", "lf", "kappa") if c[k] is not None or g[k] is not None]
    if any(a is None or b is None for a, b in pairs):
        raise RuntimeError("a unit is measurable on one device and not on the other")
    pairs.append((out["cpu"]["model"], out["cuda"]["model"]))
    rel = max(abs(a - b) / abs(a) for a, b in pairs)
    return {"maxRelativeDifference": rel, "cpuKappa": [s["kappa"] for s in out["cpu"]["units"]], "cudaKappa": [s["kappa"] for s in out["cuda"]["units"]], "cpuModelKappa": out["cpu"]["model"], "cudaModelKappa": out["cuda"]["model"]}


result = {"device": a.device, "steps": a.steps, "model": dict(MODEL, inputs=196, batch=BATCH), "torch": torch.__version__}
log(f"plain loop, {a.steps} steps on {a.device}")
plain_before = plain_loop(a.steps)
log("engine, α = 0, monitoring off")
off, backend = engine(a.steps, 0, 10 ** 6)
log("engine, α = 0, default monitoring")
monitored, _ = engine(a.steps, 0, 10)
log("engine, default α")
regularized, _ = engine(a.steps, 0.01, 10)
log("plain loop again")
plain = (plain_before + plain_loop(a.steps)) / 2
result.update(
    backend=backend,
    plainMsPerStep=plain,
    engineMsPerStep=off,
    monitoredMsPerStep=monitored,
    regularizedMsPerStep=regularized,
    instrumentationFraction=off / plain - 1,
    monitoringFraction=(monitored - off) / off,
    regularizedCost=regularized / off,
)
if a.device.startswith("cuda"):
    result["kappaCpuVsCuda"] = kappa_cpu_vs_cuda()
print(json.dumps(result))

"""The PyTorch engine against a plain PyTorch loop of the same model, in one run (no Node needed).

Reference MoE shape (8 experts × (256 ReLU → 10), softmax gate, batch 128, cross-entropy, Adam) on the
built-in data (14×14 = 196 inputs: the 784-input Fashion-MNIST files are not on every box). Measured:
  plain     a plain PyTorch loop of pltrain's MoeMlp: forward, loss, backward, Adam, loss.item()
  engine    `python -m pltrain` itself (WebSocket served, metrics streamed to metrics.jsonl, commands
            checked at every step boundary), α = 0, κ monitoring off (monitor.every beyond the run)
  attached  the same with a client attached (this process, over the run's socket with its token, as the
            extension would be): every event also sent over the WebSocket and read
  monitor   the engine at the default monitoring (every 10 steps, probe 16), α = 0
  default   the same at the default α (0.01: every step measures κ in its own graph for the regularizer)
Times are per step over the last 80 % of each run (start-up excluded); the engine's from its own
metrics.jsonl timestamps.

Paired estimates. The costs sought are a few per cent of a ~4.5 ms step, while on a shared 2-core machine
one run's step time moves by ±3–5 % with the load, and the load drifts over the bench's minute. So the
fractions are not taken from medians of separate runs (which compare runs seconds apart: each round's
drift lands in the difference) but per round, from runs next to each other: in each round the runs go
plain, engine, monitored, attached, and the next round in the reverse order (so neither run of a pair is
always the later one), and a round gives engine/plain − 1 (instrumentation), monitored/engine − 1
(monitoring) and attached/plain − 1. Each run's figure there is the interquartile mean over its timed
window's blocks of 10 steps (each block holds exactly one measurement of the default monitoring: the
mean of the middle half of the blocks' times), so the blocks in which the process lost its core to
another job do not move the figure as they move the run's mean; a mean, not the median, because the
engine's stamps are whole milliseconds (a block of ~45 ms read to ±1 ms: a median would move in steps of
0.1 ms a step, 2 %, where a mean of a dozen blocks averages the rounding out).
Each fraction is the median of its rounds' ratios, reported with their spread (`spread`: least,
quartiles, most) so that a figure within its noise is seen as such; `pairedFractions` keeps every
round's ratio. Kept beside them: the same pairs of the runs' means (`pairedFractionsOfRunMeans`,
`spreadOfRunMeans`) and the older median-of-runs figures (`unpairedFractions`). The per-step figures
(`plainMsPerStep`, …) are medians of the runs' means over the rounds (`runs`; `blockRuns` the
blocks' interquartile means); the default α runs once, after the rounds. `loadAverage`: the machine's 1-minute load
average before and after.
κ monitoring is the exception: `monitoringFraction` is measured inside each monitored run (in_run_monitoring:
the extra time of the steps that measure and of the steps right after them, over the other steps of the
same process), the median over the rounds (`inRunMonitoringFractions`, `spread.monitoringInRun`). Whole
processes' step times differ by ±4 % even on an idle machine (ten pairs of 600-step runs, 2026-12-07: the
between-runs ratio read −1.0 … +10.6 % where the in-run one read 3.7 … 4.4 %), which no number of rounds
this bench can afford averages out; the between-runs ratio stays beside it
(`monitoringFractionBetweenRuns`, `spread.monitoring`) as the check that nothing spread over every step
of a monitored run is missed.
Also checks that κ measured on CUDA matches the CPU figures on the same weights (--device cuda).
usage: python3 bench/engine_torch.py [--device cpu|cuda] [--steps N] [--threads N] [--rounds N]
Prints progress on stderr and one JSON line on stdout."""
import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))

p = argparse.ArgumentParser()
p.add_argument("--device", default="cpu")
p.add_argument("--steps", type=int, default=300)
p.add_argument("--threads", type=int, default=0)
p.add_argument("--rounds", type=int, default=6)
a = p.parse_args()
if a.threads:
    # Before torch loads: the BLAS under Debian's torch (OpenBLAS, pthreads) takes its thread count from
    # the environment at load, not from torch.set_num_threads, so without this the plain loop here would
    # run its products on every core while the engine (started with this environment) runs them on one.
    os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(a.threads)

import torch  # noqa: E402

from pltrain import config as cfg  # noqa: E402
from pltrain.data import batches, load_builtin  # noqa: E402
from pltrain.models import MoeMlp  # noqa: E402
from pltrain.train import Measurer  # noqa: E402

if a.threads:
    torch.set_num_threads(a.threads)
device = torch.device(a.device)
MODEL = {"experts": 8, "hiddenUnits": 256}
BATCH = 128
log = lambda m: print(f"[engine_torch] {m}", file=sys.stderr, flush=True)


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


BLOCK = 10  # the default monitoring's period: every block of the timed window holds exactly one measurement


def per_step(stamps, steps):
    """(ms per step over the last 80 % of a run, and the interquartile mean over that window's blocks of
    BLOCK steps) from `stamps`, {steps done: ms}. The first is the run's whole cost; the second leaves out
    the slowest quarter of the blocks (where the process lost its core to another: a shared machine's
    bursts), which the mean takes in whole, and the fastest quarter alike."""
    start = steps // 5
    mean = (stamps[steps] - stamps[start]) / (steps - start)
    first = -(-start // BLOCK) * BLOCK
    blocks = [(stamps[k + BLOCK] - stamps[k]) / BLOCK for k in range(first, steps - BLOCK + 1, BLOCK)]
    return mean, (interquartile_mean(blocks) if blocks else mean)


def in_run_monitoring(stamps, steps, every=BLOCK):
    """κ monitoring's cost measured inside the monitored run: over the timed window, the mean extra time of
    the steps that measure (steps done ≡ 0 mod `every`) and of the step right after each (whatever the
    measurement left behind: caches, allocations) over the mean of the other steps, per period of `every`
    steps, as a fraction of those other steps. Paired step by step in one process, so it is free of the
    ±4 % by which whole processes' step times differ even on an idle machine (memory layout), which the
    between-runs ratio carries; it leaves out an effect spread evenly over every step of a monitored run,
    which the between-runs ratio keeps (both are reported)."""
    start = steps // 5
    took = {s: stamps[s] - stamps[s - 1] for s in range(start + 1, steps + 1)}
    mean = lambda xs: sum(xs) / len(xs)
    measuring = mean([t for s, t in took.items() if s % every == 0])
    after = mean([t for s, t in took.items() if s % every == 1])
    base = mean([t for s, t in took.items() if s % every not in (0, 1)])
    return ((measuring - base) + (after - base)) / every / base


def interquartile_mean(xs):
    """The mean of the middle half of xs (sorted; a quarter left out at each end, at least one value kept)."""
    xs = sorted(xs)
    cut = len(xs) // 4
    middle = xs[cut:len(xs) - cut]
    return sum(middle) / len(middle)


def plain_loop(steps):
    data = load_builtin()
    config = cfg.resolve({"engine": "pytorch", "model": MODEL})
    model = MoeMlp(data.features, data.classes, config, torch.Generator().manual_seed(1)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=0.003, eps=1e-7)
    xs, ys = torch.from_numpy(data.train_x).to(device), torch.from_numpy(data.train_y).to(device)
    order = batches(xs.shape[0], BATCH, 1)
    start = steps // 5
    stamps = {}
    for i in range(steps):
        if i == start:
            sync()
            stamps[i] = time.perf_counter() * 1000
        idx = torch.from_numpy(next(order)).to(device)
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(xs[idx]), ys[idx])
        loss.backward()
        opt.step()
        loss.item()  # what any loop that logs its loss pays (on CUDA also the step's sync)
        if i >= start:
            stamps[i + 1] = time.perf_counter() * 1000
    sync()
    stamps[steps] = time.perf_counter() * 1000
    return per_step(stamps, steps)


def engine(steps, alpha, every, attached=False):
    with tempfile.TemporaryDirectory() as tmp:
        conf = os.path.join(tmp, "bench.pltrain.json")
        with open(conf, "w") as f:
            json.dump({"name": "bench", "engine": "pytorch", "device": a.device, "steps": steps, "batchSize": BATCH, "alpha": alpha, "model": MODEL, "monitor": {"every": every}, "checkpointEvery": 0}, f)
        env = dict(os.environ, PYTHONPATH=os.path.join(HERE, "..", "python"))  # the thread counts set above included
        run_dir = os.path.join(tmp, "run")
        cmd = [sys.executable, "-m", "pltrain", "--config", conf, "--run-dir", run_dir]
        if attached:
            code, stderr, streamed = asyncio.run(run_attached(cmd, env, run_dir))
        else:
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            code, stderr, streamed = r.returncode, r.stderr, None
        if code != 0:
            raise RuntimeError(f"the engine failed: {stderr.strip().splitlines()[-1:]}")
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            times = {m["step"]: m["time"] for m in map(json.loads, f)}
        with open(os.path.join(run_dir, "events.jsonl")) as f:
            backend = next(e["backend"] for e in map(json.loads, f) if e["type"] == "hello")
        if attached:
            on_disk = sum(1 for name in ("metrics.jsonl", "commands.jsonl", "events.jsonl") if os.path.exists(os.path.join(run_dir, name)) for _ in open(os.path.join(run_dir, name)))
            if streamed != list(range(on_disk)):
                raise RuntimeError(f"the attached client saw {len(streamed)} events, not the {on_disk} on disk in seq order")
    figures = per_step(times, steps)
    if every < steps:
        figures += (in_run_monitoring(times, steps, every),)
    return figures, backend


async def run_attached(cmd, env, run_dir):
    """Runs the engine with a client attached from its first event to its last: connects with the run's
    token as the extension does, subscribes from the start and reads every frame. (exit code, stderr,
    the seqs the client received)."""
    import websockets

    from pltrain.protocol import LISTENING_PREFIX, TOKEN_HEADER

    proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stderr = asyncio.ensure_future(proc.stderr.read())
    seqs = []
    while True:
        line = (await proc.stdout.readline()).decode()
        if not line:
            break
        if line.startswith(LISTENING_PREFIX):
            endpoint = json.loads(line[len(LISTENING_PREFIX):])
            with open(os.path.join(run_dir, "token")) as f:
                token = f.read().strip()
            drain = asyncio.ensure_future(proc.stdout.read())  # the progress lines
            async with websockets.unix_connect(endpoint["socket"], "ws://localhost/", extra_headers={TOKEN_HEADER: token}, max_size=None) as ws:
                await ws.send(json.dumps({"type": "subscribe", "sinceSeq": -1}))
                try:
                    async for message in ws:
                        seqs.append(json.loads(message)["seq"])
                except websockets.ConnectionClosed:
                    pass
            await drain
            break
    code = await proc.wait()
    return code, (await stderr).decode(), seqs


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


def median(xs):
    return sorted(xs)[len(xs) // 2] if len(xs) % 2 else sum(sorted(xs)[len(xs) // 2 - 1:len(xs) // 2 + 1]) / 2


def quantile(xs, q):
    """The q-quantile of xs, linearly interpolated between order statistics."""
    xs = sorted(xs)
    at = q * (len(xs) - 1)
    lo = int(at)
    return xs[lo] if lo + 1 >= len(xs) else xs[lo] + (at - lo) * (xs[lo + 1] - xs[lo])


def spread(xs):
    return {"min": min(xs), "q1": quantile(xs, 0.25), "median": median(xs), "q3": quantile(xs, 0.75), "max": max(xs)}


result = {"device": a.device, "steps": a.steps, "rounds": a.rounds, "model": dict(MODEL, inputs=196, batch=BATCH), "torch": torch.__version__}
load_before = os.getloadavg()[0]
runs = {"plain": [], "engine": [], "attached": [], "monitored": [], "regularized": []}
block_runs = {k: [] for k in runs}  # the same runs' interquartile means of their blocks
in_run = []  # each monitored run's in_run_monitoring
backend = None


def record(kind, figures):
    runs[kind].append(figures[0])
    block_runs[kind].append(figures[1])
    if kind == "monitored":
        in_run.append(figures[2])


ORDER = ("plain", "engine", "monitored", "attached")
for r in range(a.rounds):
    for kind in ORDER if r % 2 == 0 else ORDER[::-1]:
        if kind == "plain":
            log(f"round {r + 1}/{a.rounds}: plain loop, {a.steps} steps on {a.device}")
            record("plain", plain_loop(a.steps))
        elif kind == "engine":
            log(f"round {r + 1}/{a.rounds}: engine, α = 0, monitoring off")
            figures, backend = engine(a.steps, 0, 10 ** 6)
            record("engine", figures)
        elif kind == "monitored":
            log(f"round {r + 1}/{a.rounds}: engine, α = 0, default monitoring")
            record("monitored", engine(a.steps, 0, 10)[0])
        else:
            log(f"round {r + 1}/{a.rounds}: engine, α = 0, monitoring off, a client attached")
            record("attached", engine(a.steps, 0, 10 ** 6, attached=True)[0])
log("engine, default α")
record("regularized", engine(a.steps, 0.01, 10)[0])
plain, off, attached, monitored, regularized = (median(runs[k]) for k in ("plain", "engine", "attached", "monitored", "regularized"))


def paired(per_run):
    return {
        "instrumentation": [e / p - 1 for e, p in zip(per_run["engine"], per_run["plain"])],
        "attachedInstrumentation": [t / p - 1 for t, p in zip(per_run["attached"], per_run["plain"])],
        "monitoring": [m / e - 1 for m, e in zip(per_run["monitored"], per_run["engine"])],
    }


by_block, by_mean = paired(block_runs), paired(runs)
result.update(
    backend=backend,
    plainMsPerStep=plain,
    engineMsPerStep=off,
    attachedMsPerStep=attached,
    monitoredMsPerStep=monitored,
    regularizedMsPerStep=regularized,
    instrumentationFraction=median(by_block["instrumentation"]),
    attachedInstrumentationFraction=median(by_block["attachedInstrumentation"]),
    # The monitor steps' extra time inside each monitored run (in_run_monitoring), median over the rounds;
    # the between-runs ratio of the same runs is `monitoringFractionBetweenRuns` (spread: `spread.monitoring`).
    monitoringFraction=median(in_run),
    monitoringFractionBetweenRuns=median(by_block["monitoring"]),
    inRunMonitoringFractions=in_run,
    regularizedCost=regularized / off,
    pairedFractions=by_block,
    spread={**{k: spread(v) for k, v in by_block.items()}, "monitoringInRun": spread(in_run)},
    pairedFractionsOfRunMeans=by_mean,
    spreadOfRunMeans={k: spread(v) for k, v in by_mean.items()},
    unpairedFractions={"instrumentation": off / plain - 1, "attachedInstrumentation": attached / plain - 1, "monitoring": (monitored - off) / off},
    runs=runs,
    blockRuns=block_runs,
    loadAverage=[load_before, os.getloadavg()[0]],
)
if a.device.startswith("cuda"):
    result["kappaCpuVsCuda"] = kappa_cpu_vs_cuda()
print(json.dumps(result))

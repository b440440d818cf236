"""Steering the user's own PyTorch loop (issue 13): `run = pltrain.attach(model, units=..., probe=...)`, then
`run.step(loss=...)` once per step, after optimizer.step(). The same protocol (docs/protocol.md), run
directory and steering rules as the engine (train.py); the estimators follow docs/method.md's
"Definitions (contract)" on the user's units. Under DDP (torch.distributed initialized, world size > 1)
rank 0 owns the socket and the run directory and every command reaches every rank at the same step
(distributed.py). docs/pytorch.md shows the five lines to add."""
import asyncio
import atexit
import json
import math
import os
import signal
import sys
import threading
import time

import numpy as np
import torch

from .estimators import MIN_SERVED, damped_kappa, serve_share
from .events import EventLog
from .protocol import LISTENING_PREFIX, PROTOCOL_VERSION, RUN_FILES, describe_command, dumps
from .rundir import RunAnnouncement, RunDirLock, establish_token, now_ms, prepare_run_dir, write_json_atomic
from .server import TrainerServer, choose_transport
from .steering import DURABLE_KINDS, SteeringState

# Where an attached run keeps what a command changed (α, frozen units), fsynced before the ack.
STEERING_FILE = "steering.json"
# The extension names the run directory of a script it starts (launcher.ts) through this variable.
RUN_DIR_ENV = "PLTRAIN_RUN_DIR"
# ... and the config file it was started from (its `alpha`, `steps`, `logEvery`, `monitor`, `name` apply).
CONFIG_ENV = "PLTRAIN_CONFIG"
LAUNCH_FIELDS = ("alpha", "steps", "logEvery", "monitor", "name")
DEFAULTS = {"alpha": 0.0, "steps": 0, "logEvery": 1, "monitor": {"every": 10, "probeSize": 16, "damping": 1e-6}}
# While paused, rank 0 tells the other ranks "still paused" this often (they wait in a broadcast).
PAUSE_TICK_S = 1.0


class StopTraining(Exception):
    """run.step() after the run was stopped from VS Code (the step that saw the stop returned False)."""


def _unwrap(model):
    # A DDP (or DataParallel) wrapper's forward runs collectives: the probe uses the module inside.
    return model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model


def _params_of(spec):
    if isinstance(spec, torch.nn.Module):
        return [p for p in spec.parameters()]
    if isinstance(spec, torch.Tensor):
        return [spec]
    return list(spec)


def _launch_config():
    """The run fields of the config VS Code started this script from (CONFIG_ENV), as written in it: the
    file is the per-run choice, so they override the script's own `config=` and `total_steps=`."""
    path = os.environ.get(CONFIG_ENV)
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{CONFIG_ENV}={path}: cannot read the config this script was started from: {e}") from e
    if not isinstance(raw, dict):
        raise ValueError(f"{CONFIG_ENV}={path}: the config this script was started from is not a JSON object")
    out = {k: raw[k] for k in LAUNCH_FIELDS if k in raw}
    if "monitor" in out:
        if not isinstance(out["monitor"], dict):
            raise ValueError(f"{CONFIG_ENV}={path}: monitor must be an object, got {out['monitor']!r}; fix it in that file")
        out["monitor"] = {k: v for k, v in out["monitor"].items() if k in ("every", "damping")}
    # Its fields checked on their own, so an error names the file they came from, not the script.
    try:
        _resolve_config(out, 0)
    except ValueError as e:
        raise ValueError(f"{CONFIG_ENV}={path}: {e}; fix it in that file") from e
    return out


def _resolve_config(config, n_probe):
    out = {**DEFAULTS, **(config or {})}
    out["monitor"] = {**DEFAULTS["monitor"], **((config or {}).get("monitor") or {})}
    out["monitor"]["probeSize"] = n_probe
    d = out["monitor"]["damping"]
    if not (isinstance(d, (int, float)) and 0 < d <= 1):
        raise ValueError(f"monitor.damping must be in (0, 1], got {d!r}")
    if not (isinstance(out["monitor"]["every"], int) and out["monitor"]["every"] >= 1):
        raise ValueError(f"monitor.every must be an integer ≥ 1, got {out['monitor']['every']!r}")
    if not (isinstance(out["steps"], int) and out["steps"] >= 0):
        raise ValueError(f"steps must be an integer ≥ 0, got {out['steps']!r}")
    if not (isinstance(out["alpha"], (int, float)) and 0 <= out["alpha"] <= 1e6):
        raise ValueError(f"alpha must be a number in [0, 1e6], got {out['alpha']!r}")
    return out


class Kernels:
    """The probe's tangent kernels of the user's units (docs/method.md items 2–4): s_i = u_iᵀ z(x_i),
    J_e[i, :] = ∂s_i/∂θ_e with u held fixed, K_e = J_e J_eᵀ; K_rest the same for every parameter outside
    the units. `w` is the leaf standing for u inside the Jacobian, so the regularizer can follow u's
    own dependence on the weights (item 7)."""

    def __init__(self, model, unit_params, rest_params, probe_x, probe_y):
        self.model, self.unit_params, self.rest_params = model, unit_params, rest_params
        self.probe_x, self.probe_y = probe_x, probe_y

    def directions(self, logits):
        """u_i = g_i/‖g_i‖, g_i = softmax(z_i) − y_i, differentiable; a fitted example (g = 0) keeps u = 0."""
        g = torch.softmax(logits, dim=1) - torch.nn.functional.one_hot(self.probe_y, logits.shape[1]).to(logits.dtype)
        norm = g.norm(dim=1, keepdim=True)
        safe = torch.where(norm > 0, norm, torch.ones_like(norm))
        return torch.where(norm > 0, g / safe, torch.zeros_like(g))

    def compute(self, create_graph):
        logits = _unwrap(self.model)(self.probe_x)
        u = self.directions(logits)
        w = u.detach().clone().requires_grad_(create_graph)
        s = (w * logits).sum(dim=1)
        n = s.shape[0]
        groups = self.unit_params + [self.rest_params]
        flat = [p for ps in groups for p in ps]
        eye = torch.eye(n, dtype=s.dtype, device=s.device)
        grads = torch.autograd.grad(s, flat, grad_outputs=eye, is_grads_batched=True, create_graph=create_graph, allow_unused=True)
        kernels, at = [], 0
        for ps in groups:
            rows = [grads[at + j].reshape(n, -1) if grads[at + j] is not None else s.new_zeros(n, 0) for j in range(len(ps))]
            at += len(ps)
            j = torch.cat(rows, dim=1) if rows else s.new_zeros(n, 0)
            k = j @ j.T
            kernels.append(k if create_graph else k.detach())
        return kernels[:-1], kernels[-1], u, w, logits


def extremes(kernel):
    """λ_min, λ_max (negative round-off clipped to 0) and their eigenvectors, in float64."""
    k = np.asarray(kernel, dtype=np.float64)
    values, vectors = np.linalg.eigh((k + k.T) / 2)
    return max(float(values[0]), 0.0), max(float(values[-1]), 0.0), vectors[:, 0].copy(), vectors[:, -1].copy()


class Run:
    """One attached run. Create it with attach()."""

    def __init__(self, model, units, probe, run_dir, config, router, unit_name, total_steps, name):
        import torch.distributed as dist

        self.model = model
        self.unit_names = [n for n, _ in units]
        self.unit_params = [_params_of(spec) for _, spec in units]
        if not self.unit_params:
            raise ValueError("units is empty: name at least one (name, parameters or module)")
        for name_, ps in zip(self.unit_names, self.unit_params):
            if not ps:
                raise ValueError(f"unit {name_!r} has no parameters")
        in_units = {id(p) for ps in self.unit_params for p in ps}
        if len(in_units) != sum(len(ps) for ps in self.unit_params):
            raise ValueError("a parameter belongs to two units: units must not overlap")
        self.rest_params = [p for p in _unwrap(model).parameters() if id(p) not in in_units and p.requires_grad]
        self.router = router
        self.unit_name = unit_name
        self.E = len(self.unit_params)
        self.distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.rank = dist.get_rank() if self.distributed else 0
        probe_x, probe_y = probe
        self.kernels = Kernels(model, self.unit_params, self.rest_params, probe_x, probe_y)
        launch = _launch_config()
        if total_steps is not None:
            config = {**(config or {}), "steps": total_steps}
        if launch:
            config = {**(config or {}), **launch, "monitor": {**((config or {}).get("monitor") or {}), **(launch.get("monitor") or {})}}
        self.config = _resolve_config(config, int(probe_x.shape[0]))
        self.config.setdefault("name", name)
        self.config["engine"] = "pytorch"
        self.config["script"] = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
        self.config["model"] = {"family": "custom", "experts": self.E, "units": self.unit_names}
        self.damping = self.config["monitor"]["damping"]
        self.steering = SteeringState(self.E, float(self.config["alpha"]), (), unit_name)
        self.step_count = 0
        self.frozen = set()
        self._hooks, self._snapshots = {}, {}
        self._reg_value = None  # κ(K) from this step's regularizer(), if it was called
        self._last_kappa = None
        self._share_ema = [None] * self.E
        self._active = [True] * self.E
        self._stopped_seen = False
        self._closed = False
        self._failure = None
        self._last_time = time.perf_counter()
        self._rate = 0.0
        self._paused_reported = False
        if self.rank == 0:
            self._open(run_dir)
        atexit.register(self.close)

    # ---- rank 0: run directory, socket, events ----
    def _open(self, run_dir):
        run_dir = os.path.abspath(run_dir or os.environ.get(RUN_DIR_ENV) or os.path.join(os.getcwd(), ".pltrain", "runs", f"{self.config['name']}-{time.strftime('%Y%m%d-%H%M%S')}"))
        self.run_dir = run_dir
        prepare_run_dir(run_dir, False)
        self.lock = RunDirLock.acquire(run_dir)
        write_json_atomic(os.path.join(run_dir, RUN_FILES["config"]), self.config)
        self.run_id = os.path.basename(os.path.normpath(run_dir))
        self.events = EventLog(run_dir)
        self.announce = RunAnnouncement(run_dir, self.run_id, self.config["steps"])
        token = establish_token(run_dir)
        self.loop = asyncio.new_event_loop()
        self.events.loop = self.loop
        self._thread = threading.Thread(target=self.loop.run_forever, name="pltrain-server", daemon=True)
        self._thread.start()
        self.server = TrainerServer(token, self.events, self.steering.enqueue, lambda m: self._log("warn", m))
        endpoint = asyncio.run_coroutine_threadsafe(self.server.listen(choose_transport(run_dir, RUN_FILES["socket"])), self.loop).result()
        self.announce.update(**(endpoint if "socket" in endpoint else {"host": "127.0.0.1", "port": endpoint["port"]}), state="starting")
        p = next(iter(_unwrap(self.model).parameters()))
        gpu = p.device.type == "cuda"
        backend = {"name": "pytorch", "gpu": gpu, "engine": "pytorch", "device": f"{p.device} {torch.cuda.get_device_name(p.device)}" if gpu else "cpu",
                   "detail": f"torch {torch.__version__}, your script" + (f", {torch.distributed.get_world_size()} ranks" if self.distributed else "")}
        self.announce.update(backend=backend)
        sys.stdout.write(LISTENING_PREFIX + dumps({**endpoint, "runDir": run_dir, "runId": self.run_id, "pid": os.getpid()}) + "\n")
        sys.stdout.flush()
        self.events.emit({"type": "hello", "protocol": PROTOCOL_VERSION, "runId": self.run_id, "pid": os.getpid(), "backend": backend,
                          "startedAt": self.announce.info["startedAt"], "totalSteps": self.config["steps"], "unitCount": self.E, "unitName": self.unit_name,
                          "alpha": self.steering.alpha, "taskMetric": "accuracy", "config": self.config})
        self._set_state("running")
        # The extension's Cancel sends SIGTERM: stop at the next step boundary, as the engine does
        # (only where the script has not taken the signal itself).
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, lambda *_: self.steering.enqueue(f"signal-SIGTERM-{now_ms()}", {"kind": "stop"}))

    def _set_state(self, s, reason=None):
        extra = {"reason": reason} if reason else {}
        self.announce.update(state=s, step=self.step_count, **extra)
        self.events.emit({"type": "state", "state": s, "step": self.step_count, "time": now_ms(), **extra})

    def _log(self, level, message, topic=None):
        if self.rank != 0:
            return
        self.events.emit({"type": "log", "level": level, "message": message, "time": now_ms(), **({"topic": topic} if topic else {})})

    # ---- what the user's loop reads ----
    @property
    def alpha(self):
        """The live α (set from VS Code); the same on every rank."""
        return self.steering.alpha

    @property
    def total_steps(self):
        """The run's length as configured (`steps`: the config VS Code started the script from, else
        `total_steps=` or `config=`); 0 when nobody said. A script started from a config loops this long."""
        return self.config["steps"]

    @property
    def run_dir_path(self):
        return getattr(self, "run_dir", None)

    def trainable(self):
        return [e for e in range(self.E) if e not in self.frozen]

    def regularizer(self):
        """κ of the model's kernel K = Σ_{trainable e} K_e + K_rest on the probe (item 6), as a scalar
        tensor whose gradient is item 7's: Hellmann–Feynman with v_min, v_max of K held fixed, through
        every parameter K depends on and through u's dependence on the weights. 0 (no graph) when α = 0."""
        if self.alpha == 0:
            return torch.zeros(())
        unit_k, rest_k, u, w, _ = self.kernels.compute(True)
        k = rest_k + sum(unit_k[e] for e in self.trainable())
        mu, lf, v_min, v_max = extremes(k.detach().double().cpu().numpy())
        vmin = torch.as_tensor(v_min, dtype=k.dtype, device=k.device)
        vmax = torch.as_tensor(v_max, dtype=k.dtype, device=k.device)
        top = vmax @ k @ vmax
        bottom = vmin @ k @ vmin + self.damping * top
        surrogate = top / torch.clamp(bottom, min=1e-30) if lf > 0 else top * 0 + 1 / self.damping
        # u's path: ∂κ̃/∂w pulled back through u(θ) (value unchanged, gradient added).
        (g_w,) = torch.autograd.grad(surrogate, w, retain_graph=True, allow_unused=True)
        if g_w is not None:
            pull = (u * g_w.detach()).sum()
            surrogate = surrogate + pull - pull.detach()
        self._reg_value = damped_kappa(lf, mu, self.damping)
        return surrogate

    def measure(self):
        """Every unit's μ, L_f, κ over the probe examples it serves, served, share (items 8–9), and κ of
        the model's kernel; on the current weights, without a graph."""
        with torch.no_grad():
            served_sets = [list(range(self.kernels.probe_x.shape[0]))] * self.E
            probs = None
            if self.router is not None:
                probs = self.router(self.kernels.probe_x).detach().double().cpu().numpy()
                served_sets = [list(np.nonzero(probs[:, e] >= serve_share(self.E))[0]) for e in range(self.E)]
        unit_k, rest_k, _, _, _ = self.kernels.compute(False)
        k64 = [k.double().cpu().numpy() for k in unit_k]
        stats = []
        for e in range(self.E):
            s = served_sets[e]
            rec = {"id": e, "mu": None, "lf": None, "kappa": None, "served": len(s), "frozen": e in self.frozen, "pruned": False}
            if len(s) >= MIN_SERVED:
                mu, lf, _, _ = extremes(k64[e][np.ix_(s, s)])
                rec.update(mu=mu, lf=lf, kappa=damped_kappa(lf, mu, self.damping))
            stats.append(rec)
        model_k = rest_k.double().cpu().numpy() + sum((k64[e] for e in self.trainable()), np.zeros_like(k64[0]))
        mu, lf, _, _ = extremes(model_k)
        return stats, damped_kappa(lf, mu, self.damping), [float(np.trace(k)) for k in k64], probs

    def _shares(self, traces, inputs):
        if self.router is not None:
            with torch.no_grad():
                x = inputs if inputs is not None else self.kernels.probe_x
                shares = self.router(x).detach().double().mean(dim=0).cpu().tolist()
        else:
            total = sum(traces)
            shares = [t / total for t in traces] if total > 0 else [1 / self.E] * self.E
        s = sum(shares)
        return [min(1.0, max(0.0, x / s)) for x in shares] if s > 0 else shares

    def _observe(self, e, share):
        ema = self._share_ema[e]
        ema = self._share_ema[e] = share if ema is None else 0.95 * ema + 0.05 * share
        active = ema >= 1 / (10 * self.E)
        if active != self._active[e]:
            self._active[e] = active
            self._log("info" if active else "warn", f"{self.unit_name} {e} at step {self.step_count}: " + (f"active again (share EMA {ema:.3g})" if active else f"inactive — its share EMA {ema:.3g} is below 1/(10·{self.E})"), f"inactive/{e}")
        return active

    # ---- freeze: no update, bit-identical weights ----
    def _freeze(self, e):
        self.frozen.add(e)
        self._snapshots[e] = [p.detach().clone() for p in self.unit_params[e]]
        # The gradient is zero from backward on (before optimizer.step), and step() restores the exact
        # weights afterwards (momentum and weight decay would still move them).
        self._hooks[e] = [p.register_hook(lambda g: torch.zeros_like(g)) for p in self.unit_params[e]]

    def _unfreeze(self, e):
        self.frozen.discard(e)
        for h in self._hooks.pop(e, []):
            h.remove()
        self._snapshots.pop(e, None)

    def _restore_frozen(self):
        with torch.no_grad():
            for e, saved in self._snapshots.items():
                for p, s in zip(self.unit_params[e], saved):
                    p.copy_(s)
                    if p.grad is not None:
                        p.grad.zero_()

    # ---- the step boundary ----
    def step(self, loss, metrics=None, inputs=None):
        """Call once per step, after optimizer.step(). Records the step, applies the commands that
        arrived (every rank at this step), blocks while paused. Returns False once the run is stopped
        (then StopTraining if called again). `metrics`: optional numbers (taskLoss, accuracy, others go
        to `extra`); `inputs`: the step's batch, for a router's share."""
        if self._stopped_seen:
            raise StopTraining(f"the run was stopped at step {self.step_count}; run.step() returned False then: end the loop")
        monitor = self._is_monitor_step(self.step_count + 1)
        # ‖∇f‖² for plRatio on monitor steps only (it rides with the units' μ of the same step).
        grad_sq = self._grad_norm_sq() if monitor and self.rank == 0 else None
        self._restore_frozen()
        self.step_count += 1
        if self.rank == 0:
            self._record(loss, metrics or {}, inputs, grad_sq, monitor)
        self._boundary()
        if self.steering.stop_requested:
            self._stopped_seen = True
            return False
        return True

    def _is_monitor_step(self, step):
        """The steps whose metrics carry `units` (and plRatio): every monitor.every-th and the last."""
        return step % self.config["monitor"]["every"] == 0 or step == self.config["steps"]

    def _grad_norm_sq(self):
        """‖∇f‖² of the step just taken (the gradients optimizer.step() used: all-reduced under DDP,
        zero for frozen units), or None when the loop cleared them before run.step()."""
        with torch.no_grad():
            sq = [(p.grad.double() ** 2).sum() for p in _unwrap(self.model).parameters() if p.grad is not None]
            return float(torch.stack(sq).sum()) if sq else None

    def _record(self, loss, metrics, inputs, grad_sq, monitor):
        loss_value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        now = time.perf_counter()
        rate = 1 / max(1e-6, now - self._last_time)
        self._last_time = now
        self._rate = 0.9 * self._rate + 0.1 * rate if self._rate else rate
        reg = self._reg_value
        m = {"type": "metrics", "step": self.step_count, "time": now_ms(), "loss": loss_value, "alpha": self.alpha, "stepsPerSec": self._rate}
        if monitor:
            stats, model_kappa, traces, _ = self.measure()
            shares = self._shares(traces, inputs)
            m["units"] = [dict(s, share=shares[s["id"]], active=self._observe(s["id"], shares[s["id"]])) for s in stats]
            sq = sum(x * x for x in shares)
            m["participation"] = max(1.0, 1 / sq) if sq > 0 else 1.0
            self._last_kappa = model_kappa if reg is None else reg
        if reg is None:
            reg = self._last_kappa if self._last_kappa is not None else 0.0
        task = metrics.get("taskLoss", loss_value - self.alpha * reg if self._reg_value is not None else loss_value)
        m["taskLoss"] = float(task)
        m["regularizer"] = float(reg)
        m["taskMetric"] = float(metrics.get("accuracy", metrics.get("taskMetric", 0.0)))
        extra = {k: float(v) for k, v in metrics.items() if k not in ("taskLoss", "accuracy", "taskMetric") and math.isfinite(float(v))}
        if extra:
            m["extra"] = extra
        # docs/method.md item 11: ½‖∇f‖² / f with f* = 0 (cross-entropy and κ are ≥ 0); monitor steps only.
        if grad_sq is not None and loss_value > 0 and math.isfinite(0.5 * grad_sq / loss_value):
            m["plRatio"] = 0.5 * grad_sq / loss_value
        self._reg_value = None
        if not math.isfinite(loss_value):
            self._log("error", f"loss became NaN or infinite at step {self.step_count}")
        elif monitor or self.step_count % self.config["logEvery"] == 0:
            self.events.emit(m)
        self.announce.update(step=self.step_count)

    def _boundary(self):
        from . import distributed

        while True:
            decisions = self.steering.drain() if self.rank == 0 else []
            if self.rank == 0 and decisions:
                self._commit(decisions)
            wanted = {"alpha": self.steering.alpha, "frozen": sorted(self.steering.frozen), "paused": self.steering.paused, "stop": self.steering.stop_requested}
            if self.distributed:
                wanted = distributed.broadcast(wanted)
            self._apply(wanted)
            if self.rank == 0 and decisions:
                self._ack(decisions)
            if wanted["paused"] and not wanted["stop"]:
                if self.rank == 0:
                    if not self._paused_reported:
                        self._paused_reported = True
                        self._set_state("paused")
                    self.steering.wait_for_command(PAUSE_TICK_S)
                continue
            if self.rank == 0 and self._paused_reported:
                self._paused_reported = False
                if not wanted["stop"]:
                    self._set_state("running")
            self._last_time = time.perf_counter()
            return

    def _apply(self, wanted):
        """Every rank: the same α, frozen set, pause and stop (from rank 0's broadcast)."""
        s = self.steering
        s.alpha, s.paused, s.stop_requested = wanted["alpha"], wanted["paused"], wanted["stop"]
        target = set(wanted["frozen"])
        for e in sorted(self.frozen - target):
            self._unfreeze(e)
        for e in sorted(target - self.frozen):
            self._freeze(e)
        s.frozen = set(target)

    def _commit(self, decisions):
        """Rank 0: acks with the step they take effect at; when α or the frozen set changed, the new
        state and the acks are fsynced to steering.json before any ack is written or sent."""
        durable = any(status == "applied" and c["kind"] in DURABLE_KINDS for _, c, status, _ in decisions)
        t = now_ms()
        self._pending_acks = [{"type": "ack", "commandId": cid, "command": c, "status": status, "step": self.step_count, "time": t, **({"reason": r} if r else {})} for cid, c, status, r in decisions]
        self._pending_durable = durable

    def _ack(self, decisions):
        def before(with_seqs):
            if self._pending_durable:
                write_json_atomic(os.path.join(self.run_dir, STEERING_FILE), {"step": self.step_count, "alpha": self.steering.alpha, "frozen": sorted(self.steering.frozen), "acks": with_seqs, "time": now_ms()}, durable=True)

        self.events.emit_acks(self._pending_acks, before)
        for cid, c, status, reason in decisions:
            self._log("info", f"command {cid}: {describe_command(c, self.unit_name)} → {'applied at step ' + str(self.step_count) if status == 'applied' else 'rejected: ' + reason}")

    def fail(self, reason):
        self._failure = reason

    def close(self):
        """Ends the run: state `stopped` (from VS Code), `completed`, or `failed` (an exception escaped
        the loop inside `with`); closes the socket. Called at exit if the script does not."""
        if self._closed:
            return
        self._closed = True
        for e in list(self.frozen):
            self._unfreeze(e)
        if self.rank != 0:
            return
        if self._failure:
            self._log("error", f"training failed: {self._failure}")
            self.announce.final(state="failed", step=self.step_count, reason=self._failure)
            self.events.emit({"type": "state", "state": "failed", "step": self.step_count, "time": now_ms(), "reason": self._failure})
        else:
            self._set_state("stopped" if self.steering.stop_requested else "completed")
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            self.events.close()
            self.lock.release()

    async def _shutdown(self):
        await asyncio.sleep(0.2)
        await self.server.close()

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is not None and not issubclass(kind, (StopTraining, KeyboardInterrupt)):
            self.fail(f"{kind.__name__}: {value}")
        self.close()
        return kind is StopTraining


def attach(model, units, probe, run_dir=None, config=None, router=None, unit_name="unit", total_steps=None, name="attached"):
    """Attaches PL Trainer to your own loop.

    model: the model (a DDP wrapper is unwrapped for the probe); its forward returns class logits.
    units: [(name, module or list of parameters)], the prunable units, disjoint.
    probe: (x, y), the fixed probe batch (the first monitor.probeSize training examples, item 1).
    router: optional callable x → (n, E) routing probabilities, for served sets and shares (items 8–9);
      without one, every probe example is served and share_e = tr(K_e)/Σ tr(K_e').
    config: optional {"alpha", "steps", "logEvery", "monitor": {"every", "damping"}, "name"}.
    Returns a Run: `run.alpha`, `run.regularizer()`, `run.step(loss=..., metrics=...)`, `run.close()`."""
    return Run(model, list(units), probe, run_dir, config, router, unit_name, total_steps, name)

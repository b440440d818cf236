"""The training run (src/trainer/train.ts, step for step): device, data, model, the step loop with
steering at step boundaries, events, checkpoints, and the WebSocket served between steps."""
import asyncio
import errno
import math
import os
import signal
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from . import estimators
from .checkpoint import load_checkpoint, save_checkpoint
from .data import batches, load_dataset, spreading_stride
from .events import EventLog
from .models import MoeMlp, SwitchTransformer, create_model, moe_monitor_kernels
from .progress import Progress
from .protocol import LISTENING_PREFIX, PROTOCOL_VERSION, RUN_FILES, UNIT_NAMES, describe_command, dumps, to_precision
from .pruning import DampingFloorWatch, GatingPruner, unit_weight_norms
from .rundir import RunAnnouncement, RunDirLock, establish_token, now_ms, prepare_run_dir, write_json_atomic
from .server import TrainerServer, choose_transport
from .steering import DURABLE_KINDS, SteeringState


def _reason(e):
    """What went wrong, in one line; an OS error as Node words it (`EMFILE: too many open files, open '…'`)."""
    if isinstance(e, OSError) and e.errno in errno.errorcode:
        where = f", open '{e.filename}'" if e.filename else ""
        return f"{errno.errorcode[e.errno]}: {(e.strerror or '').lower()}{where}"
    return str(e) or type(e).__name__


def _exhaust_file_descriptors():
    """Fault injection: takes every free file descriptor, as a flood of connections would."""
    held = []
    try:
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    return held


def grad_norm_squared_terms(grads):
    """(squares, norms): 0-d tensors with ‖g‖² = Σ squares + Σ norms², in one multi-tensor norm call
    (on CUDA one fused kernel) where torch has it. The caller reads them with the step's other figures in
    one transfer and sums on the host (float64). (On the CPU a BLAS dot per large gradient was faster on
    gradients already in cache, but not right after the backward: docs/performance.md.)"""
    if not hasattr(torch, "_foreach_norm"):
        return [(g * g).sum() for g in grads], []
    return [], list(torch._foreach_norm(grads))


def grad_norm_squared_from_terms(values, n_squares):
    """‖g‖² on the host from the read-back values of grad_norm_squared_terms (squares first, then norms)."""
    return sum(values[:n_squares]) + sum(x * x for x in values[n_squares:])


def grad_norm_squared(grads):
    """Σ‖g‖² over the gradients as a float (float rounding apart, Σ (g·g).sum())."""
    squares, norms = grad_norm_squared_terms(grads)
    return grad_norm_squared_from_terms(torch.stack(squares + norms).tolist(), len(squares))


def reads_each_figure(device):
    """Whether the step reads its reported figures one by one (the CPU: a read is a memory read, and a stack
    or cat would only add tensor calls) rather than in one device → host transfer (CUDA: one sync)."""
    return device.type == "cpu"


class NonFiniteLoss(Exception):
    def __init__(self, step):
        super().__init__(f"loss became NaN or infinite at step {step}")


def select_device(requested):
    """The torch device and the backend info hello and run.json carry ("cuda:0 NVIDIA H200" or "cpu")."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f'device "{requested}" is not available: torch {torch.__version__} sees no CUDA GPU')
        index = int(requested.split(":")[1]) if ":" in requested else 0
        if index >= torch.cuda.device_count():
            raise RuntimeError(f'device "{requested}" is not available: {torch.cuda.device_count()} CUDA GPU(s)')
        device = torch.device("cuda", index)
        label = f"cuda:{index} {torch.cuda.get_device_name(index)}"
        info = {"name": "pytorch", "gpu": True, "detail": f"torch {torch.__version__}, CUDA {torch.version.cuda}", "engine": "pytorch", "device": label}
        return device, info
    threads = torch.get_num_threads()
    return torch.device("cpu"), {"name": "pytorch", "gpu": False, "detail": f"torch {torch.__version__}, {threads} CPU thread{'s' if threads != 1 else ''}", "engine": "pytorch", "device": "cpu"}


class Measurer:
    """κ on the fixed probe batch (docs/method.md, "Definitions (contract)"): each unit's kernel K_e of the
    model's scalarized output s_i = u_iᵀ z(x_i) w.r.t. its parameters (gates and routing inside), its own
    κ over the probe examples it serves (null below MIN_SERVED), the model's kernel
    K = Σ_{e trainable} K_e + K_rest whose κ is the regularizer; eigen-solves in float64."""

    def __init__(self, model, probe_x, probe_y, damping):
        self.model, self.probe_x, self.damping = model, probe_x, damping
        self.one_hot = F.one_hot(probe_y, model.c).to(device=probe_x.device, dtype=probe_x.dtype)
        self.label_masks = estimators.label_masks(self.one_hot)
        self.last = None  # the units' stats of the last measurement
        self.model_kappa = 0.0  # κ of the model's kernel at the last measurement
        self.traces = [0.0] * model.units
        self.direction_path = None  # (u, the leaf holding u in the kernel) of the last differentiable kernels
        self.probe_gram1 = None  # X·Xᵀ + 1 of the fixed probe (the closed forms' input kernel), made once
        # moe-mlp's experts' parameters as lists, made once (a ParameterList's iteration costs ~1.5 µs per
        # item): the optimizer and a checkpoint's restore update them in place, so the lists stay the model's.
        self.expert_params = tuple(list(ps) for ps in (model.w1, model.b1, model.w2, model.b2)) if isinstance(model, MoeMlp) else None

    def kernels(self, pruned, create_graph, mask=None):
        """(unit kernels E×n×n, the rest of the model's kernel n×n, the probe rows each unit serves)."""
        n, E = self.probe_x.shape[0], self.model.units
        self.direction_path = None
        if hasattr(self.model, "unit_kernels"):
            # Closed forms from forward quantities (moe-mlp), differentiable in every weight, u included
            # (contract 7: the regularizer's gradient follows u's dependence on the weights). One batched
            # pass of the probe gives the logits and everything the kernels read.
            # Monitoring alone (no create_graph) records no autograd graph.
            with torch.set_grad_enabled(create_graph):
                logits, parts = self.model.probe_pass(self.probe_x, pruned, mask)
                parts["gram1"] = self.gram1()
                u = estimators.output_directions_torch(logits, self.one_hot, self.label_masks)
                units = self.model.unit_kernels(self.probe_x, u, pruned, mask, parts)
                rest = self.model.kernel_rest(self.probe_x, u, pruned, mask, parts)
            served = self.model.served(self.probe_x, pruned, mask, parts)
        else:
            logits = self.model(self.probe_x, pruned, mask)
            # Per-sample gradients of the model's output, every live unit in one batched backward. The
            # kernel holds u fixed inside the Jacobian (contract 2): `held` is a leaf standing for u there,
            # and `regularizer` pulls ∂κ̃/∂held back through u(θ) (contract 7). The output bias's kernel
            # U·Uᵀ is the rest. A pruned unit serves nothing.
            u = estimators.output_directions_torch(logits if create_graph else logits.detach(), self.one_hot, self.label_masks)
            held = u.detach().clone().requires_grad_(create_graph)
            self.direction_path = (u, held) if create_graph else None
            live = [e for e in range(E) if e not in pruned]
            s = (held * logits).sum(dim=1)
            units = [torch.zeros(n, n, dtype=logits.dtype, device=logits.device)] * E
            if live:
                for e, k in zip(live, estimators.unit_kernels(s, [self.model.unit_params(e) for e in live], create_graph)):
                    units[e] = k
            units = torch.stack(units)
            rest = held @ held.T
            served = [[] if e in pruned else list(range(n)) for e in range(E)]
        if not create_graph:
            units, rest = units.detach(), rest.detach()
        return units, rest, served

    def gram1(self):
        """X·Xᵀ + 1 of the fixed probe (the closed forms' input kernel), made on first use and kept: the probe
        never changes during a run (made lazily: only the families with a flat probe use it)."""
        if self.probe_gram1 is None:
            with torch.no_grad():
                self.probe_gram1 = self.probe_x @ self.probe_x.T + 1
        return self.probe_gram1

    def condition(self, units, rest, served, frozen, pruned, trainable, vectors=True):
        """The units' stats and the model's kernel (differentiable when `units` is) with its extreme
        eigenvectors (None without `vectors`: monitoring alone needs no regularizer), from one float64
        read-back."""
        if not trainable:
            model_kernel = rest + torch.zeros_like(rest)
        else:
            # Every unit trainable (the common case): the sum over the stack itself, no gathered copy.
            model_kernel = rest + (units.sum(dim=0) if len(trainable) == units.shape[0] else units[trainable].sum(dim=0))
        # One device → host read of every kernel (the units' and the model's), one batched eigh per size.
        k64 = torch.cat([units.detach(), model_kernel.detach().unsqueeze(0)]).double().cpu().numpy()
        stats, v_min, v_max = self.condition_read(k64, served, frozen, pruned, trainable, vectors)
        return stats, model_kernel, v_min, v_max

    def condition_read(self, k64, served, frozen, pruned, trainable, vectors):
        """condition()'s host part: (stats, vMin, vMax) from every unit's kernel and the model's, stacked
        last, in float64 (E+1×n×n numpy)."""
        every_kernel, (k, k64) = k64, (k64[-1], k64[:-1])
        self.traces = [0.0 if e in pruned else t for e, t in enumerate(np.trace(k64, axis1=1, axis2=2).tolist())]
        stats, solve = [], []
        for e in range(k64.shape[0]):
            rows = served[e]
            base = {"id": e, "served": len(rows), "frozen": e in frozen, "pruned": e in pruned}
            if e in pruned or len(rows) < estimators.MIN_SERVED:
                stats.append(dict(base, mu=None, lf=None, kappa=None))
                continue
            stats.append(base)
            solve.append(e)
        rows = self.model_rows(served, trainable, k.shape[0])
        sub = rows is not None and 0 < len(rows) < k.shape[0]
        model_k = k[np.ix_(rows, rows)] if sub else k
        # The units' κ needs eigenvalues only, each over the rows its unit serves; the model's kernel also its
        # extreme eigenvectors when the regularizer follows them. Without, it joins the units' one batched
        # eigvalsh (conditioning_served: every kernel in one call, whatever its served rows).
        every_row = list(range(k.shape[0]))
        chosen = solve if vectors else solve + [k64.shape[0]]
        solved = estimators.conditioning_served(every_kernel[chosen], [served[e] for e in solve] + ([] if vectors else [rows if sub else every_row]), self.damping) if chosen else []
        for e, c in zip(solve, solved):
            stats[e].update(mu=c["mu"], lf=c["lf"], kappa=c["kappa"])
        if not vectors:
            self.last, self.model_kappa = stats, solved[-1]["kappa"]
            return stats, None, None
        c = estimators.conditioning(model_k, self.damping)
        if sub:
            # κ of the principal submatrix on `rows`, its eigenvectors embedded back (zeros elsewhere), so
            # the surrogate's vᵀKv on the full kernel is that submatrix's Rayleigh quotient.
            for key in ("vMin", "vMax"):
                full = np.zeros(k.shape[0])
                full[rows] = c[key]
                c[key] = full
        self.last, self.model_kappa = stats, c["kappa"]
        return stats, c["vMin"], c["vMax"]

    def model_rows(self, served, trainable, n):
        """The probe rows the model's κ is taken over: all of them (None), unless a family says otherwise."""
        return None

    def regularizer(self, model_kernel, v_min, v_max):
        """κ̃ of the model's kernel along its held eigenvectors (contract 7), from `kernels(…, True)`: the
        gradient through every weight K depends on and, where the kernel held u in a leaf, through u's
        own dependence on the weights (its value unchanged)."""
        reg = estimators.kappa_surrogates(model_kernel.unsqueeze(0), [v_min], [v_max], self.damping)[0]
        if self.direction_path is not None:
            u, held = self.direction_path
            (along_u,) = torch.autograd.grad(reg, held, retain_graph=True, allow_unused=True)
            if along_u is not None:
                pull = (u * along_u.detach()).sum()
                reg = reg + (pull - pull.detach())
        return reg

    def measure(self, frozen, pruned, trainable, mask=None):
        if self.expert_params is not None:
            # Monitoring alone: one scripted call for every tensor op of kernels() and condition() (the same
            # ops, so the same numbers), then the same host part.
            model = self.model
            off = None
            if pruned:
                off = torch.zeros(model.units, device=self.probe_x.device, dtype=self.probe_x.dtype)
                off[list(pruned)] = -1e9
            every = len(trainable) == model.units
            with torch.no_grad():
                k64, serves = moe_monitor_kernels(self.probe_x, self.gram1(), self.one_hot, *self.label_masks, *self.expert_params,
                                                  model.gate_w, model.gate_b, off, mask, len(pruned) == model.units, None if every else list(trainable), model.serve_share)
            served = model.served_rows(serves.cpu().tolist(), pruned)
            return self.condition_read(k64.cpu().numpy(), served, frozen, pruned, trainable, False)[0]
        units, rest, served = self.kernels(pruned, False, mask)
        return self.condition(units, rest, served, frozen, pruned, trainable, vectors=False)[0]


def choose_probe_tokens(x, y, probe_size, vocabulary):
    """The switch probe's n token positions (flat seq·T + pos), as switchTransformer.ts chooseProbeTokens:
    round r over the sequences q, position T − 1 − ((q·s + r) mod T), s ≈ T/φ coprime to T; a repeated
    (character, next character) pair is passed over while others remain (duplicates make every expert's
    kernel nearly singular)."""
    B, T = x.shape
    n = min(probe_size, B * T)
    s = spreading_stride(T)
    xs, ys = x.reshape(-1), y.reshape(-1)
    chosen, passed, pairs = [], [], set()
    for c in range(B * T):
        if len(chosen) >= n:
            break
        q, r = c % B, c // B
        flat = q * T + (T - 1 - ((q * s + r) % T))
        pair = int(xs[flat]) * vocabulary + int(ys[flat])
        if pair in pairs:
            passed.append(flat)
        else:
            pairs.add(pair)
            chosen.append(flat)
    return chosen + passed[:n - len(chosen)]


class SwitchMeasurer(Measurer):
    """κ of the switch-transformer's experts (docs/method.md, "switch-transformer"): on n probe tokens,
    per Switch layer s the layer's normalized input x_i, u_i = g_i/‖g_i‖ with g_i = ∂L/∂(Switch output at
    token i) back-propagated from the per-sequence scaled logit pulls, and the routing r_s,i = p_top at the
    expert token i is dispatched to. K_e = Σ_s (r_s r_sᵀ) ⊙ K_{e,s}^alone (two-layer closed form), served =
    the tokens routed to e in any Switch layer; the model's kernel is Σ_{e∈T} K_e (routers left out). The
    regularizer's kernels are made in the step's graph (probe_quantities with create_graph), so its
    gradient follows x, u and p_top into every weight, as switchTransformer.ts does."""

    def __init__(self, model, probe_x, probe_y, damping, probe_size):
        self.model, self.probe_x, self.probe_y, self.damping = model, probe_x, probe_y, damping
        self.tokens = choose_probe_tokens(probe_x.cpu().numpy(), probe_y.cpu().numpy(), probe_size, model.c)
        self.expert_params = None  # not moe-mlp: no scripted measurement
        self.last = None
        self.model_kappa = 0.0
        self.traces = [0.0] * model.units
        self.direction_path = None

    def probe_quantities(self, pruned, create_graph=False):
        """Per Switch layer (block, x n×D, u n×D, routing n×E) and served per expert. Held (no graph) by
        default; with `create_graph` all three are differentiable in every weight, as switchTransformer.ts
        probePass: x and p_top through the forward pass, u through the backward pass to the Switch outputs
        (a gradient of a gradient) and through the scaled pulls that seed it. Held, as piecewise constants:
        the top-1 choices, which tokens have no direction (u = 0), the pulls' choices."""
        model, (B, T) = self.model, self.probe_x.shape
        trace = []
        with torch.set_grad_enabled(True):
            logits = model(self.probe_x, pruned, None, trace)
            y = np.eye(model.c)[self.probe_y.reshape(-1).cpu().numpy()]
            if create_graph:
                # The backward pass holds the pulls (its vector is their value); the outer gradient follows them.
                pulls = estimators.scaled_logit_gradients_torch(torch.log_softmax(logits, dim=1), y, T)
            else:
                lp = torch.log_softmax(logits.detach().double(), dim=1).cpu().numpy()
                pulls = torch.as_tensor(estimators.scaled_logit_gradients(lp, y, T), dtype=logits.dtype, device=logits.device)
            # The vector-Jacobian product with the pulls: ∂⟨pulls, logits⟩/∂output with the pulls held.
            grads = torch.autograd.grad(logits, [layer["output"] for layer in trace], grad_outputs=pulls, create_graph=create_graph)
        tok = torch.tensor(self.tokens, device=logits.device)
        n, E = len(self.tokens), model.units
        layers, served = [], [set() for _ in range(E)]
        held = (lambda t: t) if create_graph else (lambda t: t.detach())  # noqa: E731
        for layer, g in zip(trace, grads):
            gi = held(g[tok])
            norm = gi.norm(dim=1, keepdim=True)
            # A token the loss does not pull on gets u = 0.
            alive = (norm.detach() > 1e-12).to(gi.dtype)
            u = gi / norm.clamp(min=1e-30) * alive
            expert_of = layer["expert_of"][tok]
            dispatched = torch.nn.functional.one_hot(expert_of, E).to(gi.dtype)
            routing = held(layer["probs"][tok]) * dispatched
            for i, e in enumerate(expert_of.tolist()):
                served[e].add(i)
            layers.append((layer["block"], held(layer["input"][tok]), u, routing))
        return layers, [sorted(s) for s in served]

    def model_rows(self, served, trainable, n):
        """The probe tokens a trainable expert serves (switchTransformer.ts, measure): a token routed only to
        frozen or pruned experts has a zero row in Σ_{e∈T} K_e (routers and shared layers are left out), which
        would make the whole probe's kernel singular and pin κ at its cap 1/δ whenever an expert is frozen."""
        return sorted({i for e in trainable for i in served[e]})

    def kernels(self, pruned, create_graph, mask=None):
        layers, served = self.probe_quantities(pruned, create_graph)
        return self.kernels_from(layers, served, pruned, create_graph)

    def kernels_from(self, layers, served, pruned, create_graph):
        """(unit kernels E×n×n, the rest (zeros: routers left out), served) from the probe quantities."""
        n, E = len(self.tokens), self.model.units
        units = []
        for e in range(E):
            k = 0
            for block, x, u, routing in layers:
                r = routing[:, e:e + 1]
                k = k + (r @ r.T) * self.model.expert_kernel_alone(block, e, x, u)
            units.append(k)
        units = torch.stack(units)
        rest = torch.zeros(n, n, dtype=units.dtype, device=units.device)
        if not create_graph:
            units = units.detach()
        self.direction_path = None
        return units, rest, [[] if e in pruned else served[e] for e in range(E)]


SHARE_EMA_WEIGHT = 0.05  # weight of a new share in the EMA (time constant 20 records)


def participation(shares):
    """1/Σ share² of the normalized shares: how many units the model effectively uses (1…E)."""
    total = sum(shares)
    if not total > 0:
        return 1.0
    return 1 / sum((x / total) ** 2 for x in shares)


class ShareWatch:
    """Routing shares and the inactive flag (docs/method.md, contract 9–10; src/trainer/pl/share.ts):
    shares normalized to sum 1, their EMA (share on the first record, then 0.95·ema + 0.05·share), a
    unit active while its EMA ≥ 1/(10·E) (a pruned unit is not flagged), one change per episode."""

    def __init__(self, units):
        self.units = units
        self.threshold = 1 / (10 * max(1, units))
        self.ema = None
        self.latest = None
        self.pending = None
        self.flagged = set()

    def observe(self, shares):
        total = sum(shares)
        if not total > 0 or len(shares) != self.units:
            return
        s = [min(1.0, max(0.0, x / total)) for x in shares]
        self.latest = s
        self.pending = participation(s)
        self.ema = s[:] if self.ema is None else [(1 - SHARE_EMA_WEIGHT) * e + SHARE_EMA_WEIGHT * x for e, x in zip(self.ema, s)]

    def take_participation(self):
        p, self.pending = self.pending, None
        return p

    def annotate(self, stats, pruned):
        out = []
        for u in stats:
            share = self.latest[u["id"]] if self.latest else u.get("share")
            ema = self.ema[u["id"]] if self.ema else None
            active = True if (u["id"] in pruned or ema is None) else ema >= self.threshold
            out.append(dict(u, **({"share": share} if share is not None else {}), active=active))
        return out

    def changes(self, stats):
        out = []
        for u in stats:
            ema = self.ema[u["id"]] if self.ema else 0.0
            if u.get("active") is False and u["id"] not in self.flagged:
                self.flagged.add(u["id"])
                out.append((u["id"], False, ema))
            elif u.get("active") is not False and u["id"] in self.flagged:
                self.flagged.discard(u["id"])
                out.append((u["id"], True, ema))
        return out


def _mean_kappa(stats, ids):
    """Mean κ of the measurable units among `ids` (for the progress line)."""
    ks = [stats[i]["kappa"] for i in ids if stats[i]["kappa"] is not None] if stats else []
    return sum(ks) / len(ks) if ks else 0.0


class Trainer:
    def __init__(self, config, config_dir, run_dir, resume=False, progress=None):
        self.config, self.config_dir, self.run_dir, self.resume = config, config_dir, run_dir, resume
        self.progress = progress or Progress()

    def _tensors(self, model, optimizer):
        out = [(f"var:{name}", p.detach().cpu().numpy()) for name, p in model.named_parameters()]
        for group, params in model.groups():
            st = optimizer.state
            for j, p in enumerate(params):
                if p in st and "exp_avg" in st[p]:
                    s = st[p]
                    out += [(f"opt:{group}:{3 * j}", np.asarray(float(s["step"]), dtype=np.float32)), (f"opt:{group}:{3 * j + 1}", s["exp_avg"].cpu().numpy()), (f"opt:{group}:{3 * j + 2}", s["exp_avg_sq"].cpu().numpy())]
        return out

    def _restore(self, model, optimizer, tensors, device):
        with torch.no_grad():
            for name, p in model.named_parameters():
                key = f"var:{name}"
                if key not in tensors:
                    raise ValueError(f"the checkpoint has no {name}: it belongs to another model")
                p.copy_(torch.from_numpy(tensors[key]).reshape(p.shape))
        for group, params in model.groups():
            for j, p in enumerate(params):
                k = f"opt:{group}:{3 * j}"
                if k in tensors:
                    optimizer.state[p] = {
                        "step": torch.tensor(float(tensors[k].reshape(-1)[0])),
                        "exp_avg": torch.from_numpy(tensors[f"opt:{group}:{3 * j + 1}"]).to(device).reshape(p.shape),
                        "exp_avg_sq": torch.from_numpy(tensors[f"opt:{group}:{3 * j + 2}"]).to(device).reshape(p.shape),
                    }

    async def run(self):
        config, run_dir = self.config, self.run_dir
        # Owner-only, fresh for a new run, and ours alone (RunDirRefused otherwise) before anything is read or written.
        prepare_run_dir(run_dir, self.resume)
        lock = RunDirLock.acquire(run_dir)
        checkpoint = load_checkpoint(run_dir) if self.resume else None
        if self.resume and checkpoint is None:
            lock.release()
            raise RuntimeError(f"no checkpoint to resume from in {run_dir}")
        if not self.resume:
            write_json_atomic(os.path.join(run_dir, RUN_FILES["config"]), config)
        run_id = os.path.basename(os.path.normpath(run_dir))
        events = EventLog.resume(run_dir, checkpoint[0]["seq"], checkpoint[0].get("acks", [])) if checkpoint else EventLog(run_dir)
        unit_name = UNIT_NAMES[config["model"]["family"]]
        units = config["model"]["experts"]
        if checkpoint:
            steering = SteeringState(units, checkpoint[0]["alpha"], checkpoint[0]["frozen"], unit_name)
            steering.pruned.update(checkpoint[0]["pruned"])
            steering.remember(checkpoint[0].get("commandIds", []))
        else:
            steering = SteeringState(units, config["alpha"], config["frozenExperts"], unit_name)
        announce = RunAnnouncement(run_dir, run_id, config["steps"])
        token = establish_token(run_dir)
        step = checkpoint[0]["step"] if checkpoint else 0
        progress = self.progress
        state = {"value": "starting"}

        def set_state(s, reason=None):
            state["value"] = s
            announce.update(state=s, step=step, **({"reason": reason} if reason else {}))
            if events.last_seq >= 0:
                events.emit({"type": "state", "state": s, "step": step, "time": now_ms(), **({"reason": reason} if reason else {})})

        def log(level, message, topic=None):
            progress.log(message)
            if events.last_seq >= 0:
                events.emit({"type": "log", "level": level, "message": message, "time": now_ms(), **({"topic": topic} if topic else {})})

        def fail(reason):
            """A fatal error's last word: run.json says `failed` and why (first, with the descriptor held in
            reserve), then the log and state events if they can still be written."""
            state["value"] = "failed"
            try:
                announce.final(state="failed", step=step, reason=reason)
            except OSError as e:
                sys.stderr.write(f"could not record the failure in run.json: {e}\n")
            try:
                log("error", f"training failed: {reason}")
                if events.last_seq >= 0:
                    events.emit({"type": "state", "state": "failed", "step": step, "time": now_ms(), "reason": reason})
            except OSError as e:
                sys.stderr.write(f"training failed: {reason} (events not recorded: {e})\n")

        def server_log(message):
            # A connection's story must never end the run: if it cannot be recorded, it goes to stderr only.
            try:
                log("warn", message)
            except OSError as e:
                sys.stderr.write(f"{message} (not recorded: {e})\n")

        server = TrainerServer(token, events, steering.enqueue, server_log)
        try:
            endpoint = await server.listen(choose_transport(run_dir, RUN_FILES["socket"]))
            announce.update(**(endpoint if "socket" in endpoint else {"host": "127.0.0.1", "port": endpoint["port"]}), state="starting")
        except OSError as e:
            fail(f"could not serve the run's socket: {_reason(e)}")
            lock.release()
            return state["value"]
        sys.stdout.write(LISTENING_PREFIX + dumps({**endpoint, "runDir": run_dir, "runId": run_id, "pid": os.getpid()}) + "\n")
        sys.stdout.flush()

        stop_signal = {"name": ""}
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            def on_signal(sig=sig):
                stop_signal["name"] = sig.name
                steering.enqueue(f"signal-{sig.name}-{now_ms()}", {"kind": "stop"})
            loop.add_signal_handler(sig, on_signal)

        # Training runs on its own thread, so the socket is served during a step (a long GPU step
        # holds up no client, heartbeat or command) and commands still act only between steps.
        def body():
            nonlocal step
            try:
                device, backend = select_device(config["device"])
                announce.update(backend=backend)
                progress.log(f"backend: {backend['name']} ({'GPU' if backend['gpu'] else 'CPU'}) — {backend['device']}, {backend['detail']}")
                data = load_dataset(config, self.config_dir)
                progress.log(f"data: {data.name}: {data.train_x.shape[0]} train / {data.test_x.shape[0]} test, {data.features} features, {data.classes} classes")
                model = create_model(config, data, device)
                pr = config["pruning"]
                progress.log(f"model: {config['model']['family']}, {model.units} {unit_name}s" + (f", pruning {'exactly' if pr['exact'] else 'up to'} {math.floor(pr['budget'] * model.units + 1e-9)}: soft masks from step {pr['warmup']}, final at step {pr['warmup'] + pr['anneal']}" if pr["enabled"] else ""))
                # One Adam (epsilon as TF.js's): a unit out of this step's update (frozen, pruned) has its
                # gradient set to None before the step, which Adam skips entirely (moments untouched).
                optimizer = torch.optim.Adam(model.parameters(), lr=config["learningRate"], eps=1e-7)
                if checkpoint:
                    self._restore(model, optimizer, checkpoint[1], device)
                n_probe = min(config["monitor"]["probeSize"], data.train_x.shape[0])
                probe_x = torch.from_numpy(data.train_x[:n_probe]).to(device)
                probe_y = torch.from_numpy(data.train_y[:n_probe])
                if isinstance(model, SwitchTransformer):
                    measurer = SwitchMeasurer(model, probe_x, probe_y.to(device), config["monitor"]["damping"], config["monitor"]["probeSize"])
                else:
                    measurer = Measurer(model, probe_x, probe_y, config["monitor"]["damping"])
                pruner = GatingPruner(model.units, pr, config["seed"]) if pr["enabled"] else None
                if pruner and checkpoint and "pruner" in checkpoint[0]:
                    pruner.set_state(checkpoint[0]["pruner"])
                train_x = torch.from_numpy(data.train_x).to(device)
                train_y = torch.from_numpy(data.train_y).to(device)

                events.emit({
                    "type": "hello", "protocol": PROTOCOL_VERSION, "runId": run_id, "pid": os.getpid(), "backend": backend,
                    "startedAt": announce.info["startedAt"], "totalSteps": config["steps"], "unitCount": units, "unitName": unit_name,
                    "alpha": steering.alpha, "taskMetric": model.task_metric, "config": config,
                    **({"resumedFromStep": step} if checkpoint else {}),
                })
                set_state("running", f"resumed from the checkpoint at step {step}" if checkpoint else None)
                if checkpoint:
                    progress.log(f"resumed from the checkpoint at step {step} (α {steering.alpha}, frozen [{', '.join(str(f) for f in sorted(steering.frozen))}])")

                def progress_now(seq, acks=None):
                    rec = {"step": step, "seq": seq, "alpha": steering.alpha, "frozen": sorted(steering.frozen), "pruned": sorted(steering.pruned), "time": now_ms()}
                    if pruner:
                        rec["pruner"] = pruner.get_state()
                    if acks:
                        rec["acks"] = acks
                    rec["commandIds"] = steering.recent_ids()
                    return rec

                def save():
                    save_checkpoint(run_dir, progress_now(events.last_seq), self._tensors(model, optimizer))

                stats = measurer.measure(steering.frozen, steering.pruned, steering.trainable())
                share_watch = ShareWatch(units)

                def report_activity(changes):
                    for e, active, ema in changes:
                        if active:
                            log("info", f"{unit_name} {e} at step {step}: active again (share EMA {ema * 100:.1f}%)", f"inactive/{e}")
                        else:
                            log("warn", f"{unit_name} {e} at step {step}: inactive — the model routes {ema * 100:.2f}% of its mass through it (EMA; below 1/(10·{units})). Its κ does not describe the model; it is not \"well conditioned\".", f"inactive/{e}")
                floor_watch = DampingFloorWatch(config["monitor"]["damping"])
                n_train = data.train_x.shape[0]
                order = batches(n_train, min(config["batchSize"], n_train), config["seed"] + step)
                ema_rate = 0.0
                last_announce = time.monotonic()
                last = time.perf_counter()
                inject_nan_at = int(os.environ.get("PLTRAIN_TEST_NAN_AT_STEP") or -1)
                inject_fds_at = int(os.environ.get("PLTRAIN_TEST_EXHAUST_FDS_AT_STEP") or -1)
                damping = config["monitor"]["damping"]
                # Read once: the parameters (the same tensors all run long) and a zero for "no regularizer".
                parameters = list(model.parameters())
                no_regularizer = torch.zeros((), device=device)
                reads_on_host = reads_each_figure(device)

                def report_floor(entered, left):
                    floor = 1 / damping
                    for e in entered:
                        log("warn", f"{unit_name} {e['id']} at step {step}: λ_min ≤ δ·λ_max on the {e.get('served', '')} probe examples it serves (μ {to_precision(e['mu'], 3)}, L_f {to_precision(e['lf'], 3)}), so its κ {to_precision(e['kappa'], 3)} is near the damping floor 1/δ = {to_precision(floor, 3)}: its kernel is (nearly) singular there, and its κ says little more. "
                            "Check its share; freeze or prune it if it stays there.", f"damping-floor/{e['id']}")
                    for e in left:
                        why = ("frozen" if e["frozen"] else "pruned") if e["frozen"] or e["pruned"] else f"off the damping floor, {'κ not measurable' if e['kappa'] is None else 'κ ' + to_precision(e['kappa'], 4)}"
                        log("info", f"{unit_name} {e['id']} at step {step}: {why}", f"damping-floor/{e['id']}")

                def apply_commands():
                    decisions = steering.drain()
                    if not decisions:
                        return
                    # "Applied" means saved: when a command changed what a resume restores (α, frozen
                    # units), a checkpoint holding it, and the acks with the seqs they are about to take,
                    # is written and fsynced before any ack is appended or sent (train.ts applyCommands).
                    durable = any(status == "applied" and c["kind"] in DURABLE_KINDS for _, c, status, _ in decisions)
                    t = now_ms()
                    acks = [{"type": "ack", "commandId": cid, "command": c, "status": status, "step": step, "time": t, **({"reason": reason} if reason else {})} for cid, c, status, reason in decisions]

                    def before(with_seqs):
                        if durable:
                            save_checkpoint(run_dir, progress_now(with_seqs[-1]["seq"], with_seqs), self._tensors(model, optimizer))

                    events.emit_acks(acks, before)
                    for cid, c, status, reason in decisions:
                        progress.log(f"command {cid}: {describe_command(c, unit_name)} → {'applied at step ' + str(step) if status == 'applied' else 'rejected: ' + reason}")

                while step < config["steps"]:
                    apply_commands()
                    if steering.paused and not steering.stop_requested:
                        set_state("paused")
                        while steering.paused and not steering.stop_requested:
                            steering.wait_for_command()
                            apply_commands()
                        if not steering.stop_requested:
                            set_state("running")
                        last = time.perf_counter()
                    if steering.stop_requested:
                        break

                    idx = torch.from_numpy(next(order)).to(device)
                    x, y = train_x[idx], train_y[idx]
                    alpha = steering.alpha
                    monitor_step = (step + 1) % config["monitor"]["every"] == 0 or step + 1 == config["steps"]
                    # The steps that report the task metric (a metrics line, or the progress line): with
                    # logEvery > 1 the others compute none of it.
                    log_step = (step + 1) % config["logEvery"] == 0 or monitor_step
                    progress_due = progress.due(step + 1, config["steps"])
                    trainable = steering.trainable()
                    pruned = frozenset(steering.pruned)
                    optimizer.zero_grad(set_to_none=True)
                    # During the pruning anneal the gate's soft mask multiplies each unit's contribution,
                    # and the gate learns from the step's ∂L/∂mask (docs/method.md, "Pruning: the gating network").
                    soft = pruner.sample_mask(step, steering.frozen, steering.pruned) if pruner else None
                    mask_t = torch.tensor(soft, dtype=torch.float32, device=device, requires_grad=True) if soft is not None else None
                    routing = routed_shares = aux = None
                    if hasattr(model, "forward_with_routing"):
                        # The step's routing (before the pruning mask) for the shares, from this forward itself.
                        logits, routing = model.forward_with_routing(x, pruned, mask_t)
                    elif hasattr(model, "forward_with_load"):
                        # Switch: this forward's load-balancing loss and tokens per expert, returned by the call.
                        logits, aux, routed = model.forward_with_load(x, pruned, mask_t)
                        routed_shares = model.routed_shares(routed)
                    else:
                        logits = model(x, pruned, mask_t)
                    task_loss = F.cross_entropy(logits, y.reshape(-1))  # a language model's logits are token-major
                    # Switch: the load-balancing loss is optimized, not reported in the task loss.
                    objective = task_loss + model.aux_loss(aux) if aux is not None else task_loss
                    measured = None
                    if alpha > 0 and trainable:
                        # κ for the weights this step starts from; the regularizer differentiates the
                        # surrogate along these eigenvectors (Hellmann–Feynman).
                        units_k, rest_k, served = measurer.kernels(pruned, True, mask_t)
                        measured, model_kernel, v_min, v_max = measurer.condition(units_k, rest_k, served, steering.frozen, pruned, trainable)
                        # The regularizer is κ of the model's kernel (contract 6–7), along its eigenvectors.
                        reg = measurer.regularizer(model_kernel, v_min, v_max)
                        total = objective + alpha * reg
                    else:
                        if monitor_step:
                            measured = measurer.measure(steering.frozen, pruned, trainable, mask_t.detach() if mask_t is not None else None)
                        reg = None
                        total = objective
                    total.backward()
                    if len(trainable) < model.units:
                        for e in range(model.units):
                            if e not in trainable:
                                for p in model.unit_params(e):
                                    p.grad = None
                    with torch.no_grad():
                        # ‖g‖² for the PL* check on monitor steps only (docs/protocol.md: plRatio rides with
                        # the units' μ of the same step); elsewhere no pass over the gradients at all.
                        squares, norms = grad_norm_squared_terms([p.grad for p in parameters if p.grad is not None]) if monitor_step else ((), ())
                        # The task metric: accuracy (the count of correct predictions, divided on the host), or a
                        # language model's perplexity exp(mean CE).
                        if not (log_step or progress_due):
                            correct = None
                        elif model.task_metric == "perplexity":
                            correct = task_loss.exp()
                        else:
                            correct = (logits.argmax(dim=1) == y).sum(dtype=logits.dtype)
                        # share_e: the step's routing mass through unit e (docs/method.md, "Share"; ShareWatch
                        # normalizes it: a sum, cheaper than a mean over the batch); a family without a router
                        # takes it from the kernels on monitor steps (below).
                        share = routing.sum(dim=0) if routing is not None else None
                        no_reg = reg is None
                        if reads_on_host:
                            # On the CPU each read is a memory read: every figure read on its own, no stack or
                            # cat (each tensor call costs ~10 µs on the caches the backward left).
                            loss_value = total.item()
                            task_value = loss_value if task_loss is total else task_loss.item()
                            reg_value = 0.0 if no_reg else reg.item()
                            accuracy = None if correct is None else correct.item()
                            shares = share.tolist() if share is not None else []
                            terms = [*squares, *norms]
                            terms = torch.stack(terms).tolist() if terms else ()
                        else:
                            # One device → host transfer per step for everything reported (no_grad: nothing detached).
                            reported = torch.cat([torch.stack([total, task_loss, no_regularizer if no_reg else reg, no_regularizer if correct is None else correct, *squares, *norms]), share if share is not None else total.new_zeros(0)]).tolist()
                            loss_value, task_value, reg_value, accuracy = reported[:4]
                            terms = reported[4:4 + len(squares) + len(norms)]
                            shares = reported[4 + len(terms):]
                        grad_norm_sq = grad_norm_squared_from_terms(terms, len(squares)) if monitor_step else None
                    optimizer.step()
                    if mask_t is not None:
                        pruner.update(mask_t.grad.tolist() if mask_t.grad is not None else [0.0] * units, steering.frozen, steering.pruned)
                    if correct is None:
                        accuracy = None
                    elif model.task_metric != "perplexity":
                        accuracy /= y.shape[0]
                    # Routing shares of this step's batch (families with a router); the others report them on measurement.
                    if routed_shares is not None:
                        shares = routed_shares  # the fraction of the step's tokens dispatched to each expert
                    if shares:
                        share_watch.observe(shares)
                    if reg is None:
                        reg_value = measurer.model_kappa
                    step += 1
                    if step == inject_nan_at:
                        loss_value = math.nan
                    if step == inject_fds_at:
                        _exhaust_file_descriptors()
                    if not math.isfinite(loss_value):
                        raise NonFiniteLoss(step)

                    # PL* check ½‖∇f‖²/(f − f*) with f* = 0, a lower bound of f (contract 11); monitor steps only.
                    pl_ratio = 0.5 * grad_norm_sq / loss_value if grad_norm_sq is not None and loss_value > 1e-12 else None
                    now = time.perf_counter()
                    rate = 1 / max(1e-6, now - last)
                    last = now
                    ema_rate = 0.9 * ema_rate + 0.1 * rate if ema_rate else rate
                    if monitor_step:
                        if not hasattr(model, "gate") and routed_shares is None:
                            # tr(K_e)/Σ tr(K_e'): the unit's fraction of the output-gradient energy, pruned 0.
                            live = [0.0 if e in pruned else measurer.traces[e] for e in range(units)]
                            share_watch.observe([t / sum(live) for t in live] if sum(live) > 0 else [0.0] * units)
                        stats = share_watch.annotate(measured, steering.pruned)
                        report_activity(share_watch.changes(stats))
                        if pruner:
                            pruner.observe(stats, unit_weight_norms(model), steering.pruned)
                        entered, left = floor_watch.observe(stats)
                        report_floor(entered, left)
                    pruned_now = []
                    if pruner and pruner.is_decision_step(step):
                        keep = pruner.decision_keep_probabilities(steering.frozen, steering.pruned)
                        pruned_now = pruner.decide(steering.frozen, steering.pruned)
                        for u in pruned_now:
                            steering.pruned.add(u)
                            k = stats[u]["kappa"] if stats else None
                            log("info", f"pruned {unit_name} {u} at step {step}: keep-probability {keep[u]:.3f}, {'κ not measurable' if k is None else 'κ ' + to_precision(k, 4)}")
                        if not pruned_now:
                            log("info", f"pruning at step {step}: the gate keeps every {unit_name} (keep-probabilities {', '.join(f'{g:.2f}' for g in keep)})")
                        if pruned_now:
                            stats = [dict(s, pruned=s["id"] in steering.pruned) for s in stats]
                    if log_step:
                        m = {"type": "metrics", "step": step, "time": now_ms(), "loss": loss_value, "taskLoss": task_value, "regularizer": reg_value, "alpha": alpha, "taskMetric": accuracy, "stepsPerSec": ema_rate}
                        if pl_ratio is not None and math.isfinite(pl_ratio):
                            m["plRatio"] = pl_ratio
                        if routed_shares is not None:
                            m["extra"] = {f"load/{e}": f for e, f in enumerate(routed_shares)}
                        part = share_watch.take_participation()
                        if part is not None:
                            m["participation"] = part
                        if monitor_step or pruned_now:
                            m["units"] = stats
                            if pruner:
                                m["gate"] = pruner.keep_probabilities(steering.frozen, steering.pruned)
                        events.emit(m)
                    if progress_due:
                        progress.update({"step": step, "totalSteps": config["steps"], "loss": loss_value, "meanKappa": _mean_kappa(measurer.last, steering.trainable()), "stepsPerSec": ema_rate, ("perplexity" if model.task_metric == "perplexity" else "accuracy"): accuracy})
                    if config["checkpointEvery"] > 0 and (step % config["checkpointEvery"] == 0 or pruned_now):
                        save()
                    if time.monotonic() - last_announce > 2:
                        last_announce = time.monotonic()
                        announce.update(step=step)
                apply_commands()
                save()
                with torch.no_grad():
                    correct, ce_sum = 0, 0.0
                    chunk = 500 if model.task_metric == "accuracy" else 32
                    for i in range(0, data.test_x.shape[0], chunk):
                        xt = torch.from_numpy(data.test_x[i:i + chunk]).to(device)
                        yt = torch.from_numpy(data.test_y[i:i + chunk]).to(device).reshape(-1)
                        out = model(xt, frozenset(steering.pruned))
                        if model.task_metric == "accuracy":
                            correct += int((out.argmax(dim=1) == yt).sum())
                        else:
                            ce_sum += float(F.cross_entropy(out, yt, reduction="sum"))
                if model.task_metric == "accuracy":
                    log("info", f"test accuracy {correct / data.test_x.shape[0] * 100:.2f}% after {step} steps")
                else:
                    log("info", f"test perplexity {math.exp(ce_sum / data.test_y.size):.3f} after {step} steps")
                set_state("stopped" if steering.stop_requested else "completed", f"stopped by {stop_signal['name']}" if stop_signal["name"] else None)
            except Exception as e:  # noqa: BLE001 — every failure ends the run as `failed`, with its reason
                fail(_reason(e))
                if not isinstance(e, NonFiniteLoss):
                    import traceback

                    traceback.print_exc()
        events.loop = loop
        try:
            await loop.run_in_executor(None, body)
        finally:
            await asyncio.sleep(0.2)
            await server.close()
            events.close()
            lock.release()
        return state["value"]

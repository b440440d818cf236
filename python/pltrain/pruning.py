"""The gating pruner and the damping-floor watch, ported from src/trainer/pl/pruner.ts and
dampingFloor.ts (see docs/method.md)."""
import math

import torch

FEATURE_COUNT, HIDDEN, BUDGET_WEIGHT = 10, 8, 10
LOGIT_DECAY, WEIGHT_DECAY = 1e-3, 1e-2
MASK_GRAD_RATE = 0.1  # EMA rate of the gate's ∂L/∂m (about the last 10 steps)
GATE_STEPS_PER_UPDATE = 4
DECISION_WINDOW_START = 0.75  # the decisions average the keep-logits from this fraction of the anneal on
TAU_START, TAU_END = 1.0, 0.05
TREND_RATE = 0.2
MASK_FLOOR = 1e-3  # a unit's mask never goes below this: a mixture with no mass has no gradient
INITIAL_LOGIT = 3.0  # the gate starts open: p = σ(3) ≈ 0.95


def _median(xs):
    if not xs:
        return None
    s = sorted(xs)
    m = len(s) >> 1
    return s[m] if len(s) % 2 else (s[m - 1] + s[m]) / 2


def _sigmoid(z):
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


def kappa_at_damping_floor(kappa, damping):
    """λ_min ≤ δ·λ_max, i.e. κ ≥ 1/(2δ) under smooth damping (messages.ts kappaAtDampingFloor); null is not."""
    return isinstance(kappa, (int, float)) and kappa >= (1 - 1e-9) / (2 * damping)


def unit_weight_norms(model):
    """‖w_e‖ over each unit's own parameters (the gate's weight-norm feature)."""
    return [math.sqrt(sum(float((p.detach().double() ** 2).sum()) for p in model.unit_params(e))) for e in range(model.units)]


class GatingPruner:
    """The gating network trained inside the objective (src/trainer/pl/pruner.ts, ported: the same
    features, network, relaxation, loss, schedule and decisions; docs/method.md, "Pruning: the gating
    network"). Features φ_e → tanh MLP + a per-unit offset → keep-logit a_e, p_e = σ(a_e); during the
    anneal a soft mask m_e = σ((a_e + ε_e)/τ) multiplies unit e's contribution and the gate learns from
    the step's ∂L/∂m; at warmup + anneal the decisions are hard and final."""

    def __init__(self, units, settings, seed=1):
        self.units, self.settings = units, settings
        size = FEATURE_COUNT * HIDDEN + HIDDEN + HIDDEN + 1 + units
        s = (seed * 7919 + 17) & 0xFFFFFFFF or 1

        def rnd():
            nonlocal s
            s = (s * 1664525 + 1013904223) & 0xFFFFFFFF
            return s / 4294967296 - 0.5

        w = [0.0] * size
        for k in range(FEATURE_COUNT * HIDDEN):
            w[k] = rnd() * (2 / math.sqrt(FEATURE_COUNT))
        for k in range(FEATURE_COUNT * HIDDEN + HIDDEN, FEATURE_COUNT * HIDDEN + 2 * HIDDEN):
            w[k] = rnd() * (2 / math.sqrt(HIDDEN))
        w[FEATURE_COUNT * HIDDEN + 2 * HIDDEN] = INITIAL_LOGIT
        self.w, self.m, self.v, self.t = w, [0.0] * size, [0.0] * size, 0
        self.rng = (seed * 104729 + 7) & 0xFFFFFFFF or 1
        self.ema = [[None, None, None] for _ in range(units)]
        self.features = None
        self.excess = [0.0] * units
        self.mask_grad_mean = [0.0] * units
        self.logit_sum = [0.0] * units
        self.logit_count = 0
        self.last_sample = None

    @property
    def allowed(self):
        return math.floor(self.settings["budget"] * self.units + 1e-9)

    def in_anneal(self, completed):
        st = self.settings
        return st["enabled"] and st["warmup"] <= completed < st["warmup"] + st["anneal"]

    def is_decision_step(self, completed):
        return self.settings["enabled"] and completed == self.settings["warmup"] + self.settings["anneal"]

    def temperature(self, completed):
        progress = min(1.0, max(0.0, (completed - self.settings["warmup"]) / max(1, self.settings["anneal"] - 1)))
        return TAU_START * (TAU_END / TAU_START) ** progress

    def observe(self, measured, weight_norms, pruned):
        E = self.units
        by_id = {s["id"]: s for s in measured}
        flog = lambda x: math.log(x) if isinstance(x, (int, float)) and math.isfinite(x) and x > 0 else None
        log_k = [flog(by_id.get(i, {}).get("kappa")) for i in range(E)]
        log_mu = [flog(by_id.get(i, {}).get("mu")) for i in range(E)]
        log_lf = [flog(by_id.get(i, {}).get("lf")) for i in range(E)]
        log_w = [flog(weight_norms[i]) for i in range(E)]
        share = [E * by_id[i]["share"] if i in by_id and isinstance(by_id[i].get("share"), (int, float)) and math.isfinite(by_id[i]["share"]) else None for i in range(E)]
        med = lambda xs: _median([x for i, x in enumerate(xs) if x is not None and i not in pruned])
        mk, mmu, mlf, mw = med(log_k), med(log_mu), med(log_lf), med(log_w)
        rel = lambda x, m: x - m if x is not None and m is not None else 0.0
        log_f = math.log(self.settings["kappaFactor"])
        features = []
        for i in range(E):
            def trend(k, x):
                prev = self.ema[i][k]
                if x is None:
                    return 0.0
                self.ema[i][k] = x if prev is None else prev + TREND_RATE * (x - prev)
                return 0.0 if prev is None else x - prev

            features.append([
                rel(log_k[i], mk), rel(log_mu[i], mmu), rel(log_lf[i], mlf),
                0.0 if log_k[i] is not None else 1.0,
                share[i] - 1 if share[i] is not None else 0.0,
                0.0 if share[i] is not None else 1.0,
                rel(log_w[i], mw),
                trend(0, log_k[i]), trend(1, share[i]), trend(2, log_w[i]),
            ])
        self.features = features
        self.excess = [max(0.0, log_k[i] - mk - log_f) if log_k[i] is not None and mk is not None else 0.0 for i in range(E)]

    @property
    def ready(self):
        return self.features is not None

    def _logits_of(self, w, phi):
        """a = tanh(Φ·W1 + b1)·w2 + b2 + offsets, differentiable in the flattened weights w (torch)."""
        F_, H = FEATURE_COUNT, HIDDEN
        at = 0

        def take(n, shape):
            nonlocal at
            t = w[at:at + n].reshape(shape)
            at += n
            return t

        w1, b1, w2, b2, offsets = take(F_ * H, (F_, H)), take(H, (H,)), take(H, (H, 1)), take(1, (1,)), take(self.units, (self.units, 1))
        return (torch.tanh(phi @ w1 + b1) @ w2 + b2 + offsets).reshape(self.units)

    def _logits(self):
        with torch.no_grad():
            return self._logits_of(torch.tensor(self.w, dtype=torch.float64), torch.tensor(self.features, dtype=torch.float64)).tolist()

    def _uniform(self):
        self.rng = (self.rng * 1664525 + 1013904223) & 0xFFFFFFFF
        return self.rng / 4294967296

    def sample_mask(self, completed, frozen, pruned):
        """The soft mask for the step about to run (None outside the anneal or before a measurement)."""
        if not self.in_anneal(completed) or self.features is None:
            return None
        tau = self.temperature(completed)
        noise = []
        for _ in range(self.units):
            u = min(1 - 1e-7, max(1e-7, self._uniform()))
            noise.append(math.log(u) - math.log(1 - u))
        self.last_sample = (noise, tau)
        logits = self._logits()
        if completed - self.settings["warmup"] >= DECISION_WINDOW_START * self.settings["anneal"]:
            self.logit_sum = [s + a for s, a in zip(self.logit_sum, logits)]
            self.logit_count += 1
        return [0.0 if i in pruned else 1.0 if i in frozen else max(MASK_FLOOR, _sigmoid((a + noise[i]) / tau)) for i, a in enumerate(logits)]

    def update(self, mask_grad, frozen, pruned):
        if self.last_sample is None or self.features is None:
            return
        if not any(i not in frozen and i not in pruned for i in range(self.units)):
            return
        self.mask_grad_mean = [g + MASK_GRAD_RATE * (max(-1.0, min(1.0, float(mask_grad[i]) if math.isfinite(float(mask_grad[i])) else 0.0)) - g) for i, g in enumerate(self.mask_grad_mean)]
        for _ in range(GATE_STEPS_PER_UPDATE):
            self._adam_step(self.loss_and_gradient(self.mask_grad_mean, frozen, pruned, self.last_sample)[1])
        self.last_sample = None

    def loss_and_gradient(self, mask_grad, frozen, pruned, sample):
        """The gate loss and its gradient w.r.t. the gate's weights (torch autograd, float64)."""
        E = self.units
        noise, tau = sample
        trainable = torch.tensor([0.0 if (i in frozen or i in pruned) else 1.0 for i in range(E)], dtype=torch.float64)
        phi = torch.tensor(self.features, dtype=torch.float64)
        ghat = torch.tensor([float(mask_grad[i]) for i in range(E)], dtype=torch.float64) * trainable
        cost = torch.tensor([(x + self.settings["keepCost"]) / E for x in self.excess], dtype=torch.float64)
        fixed_kept = sum(1 for i in range(E) if i in frozen and i not in pruned)
        target = 1 - self.allowed / E
        w = torch.tensor(self.w, dtype=torch.float64, requires_grad=True)
        a = self._logits_of(w, phi)
        mask = torch.clamp(torch.sigmoid((a + torch.tensor(noise, dtype=torch.float64)) / tau), min=MASK_FLOOR)
        p = torch.sigmoid(a)
        task = (ghat * mask * trainable).sum()
        keep_cost = (cost * p * trainable).sum()
        kept = ((p * trainable).sum() + fixed_kept) / E
        gap = target - kept
        budget = (gap if self.settings["exact"] else torch.relu(gap)) ** 2 * BUDGET_WEIGHT
        decay = (a ** 2 * trainable).sum() * (LOGIT_DECAY / E)
        FH = FEATURE_COUNT * HIDDEN
        shared = ((w[:FH] ** 2).sum() + (w[FH + HIDDEN:FH + 2 * HIDDEN] ** 2).sum()) * WEIGHT_DECAY
        loss = task + keep_cost + budget + decay + shared
        (grad,) = torch.autograd.grad(loss, w)
        return float(loss), grad.tolist()

    def keep_probabilities(self, frozen, pruned):
        if self.features is None:
            return [0.0 if i in pruned else 1.0 for i in range(self.units)]
        return [0.0 if i in pruned else 1.0 if i in frozen else _sigmoid(a) for i, a in enumerate(self._logits())]

    def _decision_logits(self):
        return [x / self.logit_count for x in self.logit_sum] if self.logit_count else self._logits()

    def decision_keep_probabilities(self, frozen, pruned):
        if self.features is None:
            return self.keep_probabilities(frozen, pruned)
        return [0.0 if i in pruned else 1.0 if i in frozen else _sigmoid(a) for i, a in enumerate(self._decision_logits())]

    def decide(self, frozen, pruned):
        if not self.settings["enabled"] or self.features is None:
            return []
        trainable = [i for i in range(self.units) if i not in pruned and i not in frozen]
        room = min(self.allowed - len(pruned), len(trainable) - 1)
        if room <= 0:
            return []
        a = self._decision_logits()
        cands = [i for i in trainable if self.settings["exact"] or a[i] < 0]
        cands.sort(key=lambda i: (a[i], i))
        return cands[:room]

    def get_state(self):
        return {"weights": list(self.w), "adamM": list(self.m), "adamV": list(self.v), "adamT": self.t, "rng": self.rng,
                "ema": [list(r) for r in self.ema], "features": [list(r) for r in self.features] if self.features else None,
                "excess": list(self.excess), "maskGradMean": list(self.mask_grad_mean), "logitSum": list(self.logit_sum), "logitCount": self.logit_count}

    def set_state(self, s):
        if len(s.get("weights") or []) != len(self.w) or len(s.get("ema") or []) != self.units or len(s.get("excess") or []) != self.units:
            raise ValueError("pruner state does not fit this model")
        self.w, self.m, self.v, self.t, self.rng = list(s["weights"]), list(s["adamM"]), list(s["adamV"]), s["adamT"], s["rng"]
        self.ema = [list(r) for r in s["ema"]]
        self.features = [list(r) for r in s["features"]] if s.get("features") else None
        self.excess = list(s["excess"])
        self.mask_grad_mean = list(s["maskGradMean"]) if len(s.get("maskGradMean") or []) == self.units else [0.0] * self.units
        self.logit_sum = list(s["logitSum"]) if len(s.get("logitSum") or []) == self.units else [0.0] * self.units
        self.logit_count = s.get("logitCount", 0)

    def _adam_step(self, grad):
        lr = self.settings["gateLearningRate"]
        self.t += 1
        b1, b2 = 0.9, 0.999
        for k in range(len(self.w)):
            self.m[k] = b1 * self.m[k] + (1 - b1) * grad[k]
            self.v[k] = b2 * self.v[k] + (1 - b2) * grad[k] * grad[k]
            mh, vh = self.m[k] / (1 - b1 ** self.t), self.v[k] / (1 - b2 ** self.t)
            self.w[k] -= lr * mh / (math.sqrt(vh) + 1e-8)


class DampingFloorWatch:
    """One warning per episode of a trainable unit at κ = 1/δ, one note when it leaves."""

    def __init__(self, damping):
        self.damping = damping
        self.at_floor = set()

    def observe(self, stats):
        entered, left = [], []
        for s in stats:
            counts = not s["frozen"] and not s["pruned"] and kappa_at_damping_floor(s["kappa"], self.damping)
            if counts and s["id"] not in self.at_floor:
                self.at_floor.add(s["id"])
                entered.append(s)
            elif not counts and s["id"] in self.at_floor:
                self.at_floor.discard(s["id"])
                left.append(s)
        return entered, left

"""The gating pruner and the damping-floor watch, ported from src/trainer/pl/pruner.ts and
dampingFloor.ts (the same features, network, loss, schedule and decisions; see docs/method.md)."""
import math

FEATURES, HIDDEN, BUDGET_WEIGHT, GATE_STEPS_PER_MEASUREMENT = 4, 6, 10, 20


def _median(xs):
    s = sorted(xs)
    m = len(s) >> 1
    return s[m] if len(s) % 2 else (s[m - 1] + s[m]) / 2


def kappa_at_damping_floor(kappa, damping):
    return kappa >= (1 - 1e-9) / damping


class GatingPruner:
    def __init__(self, units, settings, seed=1):
        self.units, self.settings = units, settings
        size = HIDDEN * FEATURES + HIDDEN + HIDDEN + 1
        s = (seed * 7919 + 17) & 0xFFFFFFFF or 1

        def rnd():
            nonlocal s
            s = (s * 1664525 + 1013904223) & 0xFFFFFFFF
            return s / 4294967296 - 0.5

        self.w = [rnd() * 0.5 if (i < HIDDEN * FEATURES or HIDDEN * FEATURES + HIDDEN <= i < size - 1) else 0.0 for i in range(size)]
        self.w[size - 1] = 3.0  # start open: g ≈ 0.95
        self.m, self.v, self.t = [0.0] * size, [0.0] * size, 0
        self.last_log_kappa = [None] * units
        self.features, self.log_kappa = [], []
        self.gate = [1.0] * units

    def observe(self, stats, frozen, pruned):
        live = [s for s in stats if s["id"] not in pruned]
        if not live:
            return
        lg = lambda v: math.log(max(v, 1e-300))
        med_k, med_mu, med_l = _median([lg(s["kappa"]) for s in live]), _median([lg(s["mu"]) for s in live]), _median([lg(s["lf"]) for s in live])
        self.features = [None] * self.units
        self.log_kappa = [0.0] * self.units
        for s in stats:
            lk = lg(s["kappa"])
            last = self.last_log_kappa[s["id"]]
            self.features[s["id"]] = [lk - med_k, lg(s["mu"]) - med_mu, lg(s["lf"]) - med_l, 0.0 if last is None else lk - last]
            self.log_kappa[s["id"]] = lk - med_k - math.log(self.settings["kappaFactor"])
            self.last_log_kappa[s["id"]] = lk
        trainable = [s["id"] for s in live if s["id"] not in frozen]
        if trainable:
            for _ in range(GATE_STEPS_PER_MEASUREMENT):
                self._adam_step(trainable)
        self.gate = [0.0 if i in pruned else (self._forward(self.features[i])[1] if self.features[i] else 1.0) for i in range(self.units)]

    def is_decision_step(self, step):
        st = self.settings
        return st["enabled"] and step >= st["warmup"] and (step - st["warmup"]) % st["every"] == 0

    def decide(self, frozen, pruned):
        if not self.settings["enabled"] or not self.features:
            return []
        allowed = math.floor(self.settings["budget"] * self.units + 1e-9) - len(pruned)
        trainable = [i for i in range(self.units) if i not in pruned and i not in frozen]
        room = min(allowed, len(trainable) - 1)
        if room <= 0:
            return []
        cands = [i for i in trainable if self.gate[i] < self.settings["threshold"]]
        cands.sort(key=lambda i: (self.gate[i], -self.log_kappa[i]))
        return cands[:room]

    def get_state(self):
        return {"weights": list(self.w), "adamM": list(self.m), "adamV": list(self.v), "adamT": self.t, "lastLogKappa": list(self.last_log_kappa)}

    def set_state(self, s):
        if len(s["weights"]) != len(self.w) or len(s["lastLogKappa"]) != self.units:
            raise ValueError("pruner state does not fit this model")
        self.w, self.m, self.v, self.t = list(s["weights"]), list(s["adamM"]), list(s["adamV"]), s["adamT"]
        self.last_log_kappa = list(s["lastLogKappa"])

    def loss_and_gradient(self, ids):
        grad = [0.0] * len(self.w)
        E = len(ids)
        outs = [self._forward(self.features[i]) for i in ids]
        mean_g = sum(o[1] for o in outs) / E
        shortfall = max(0.0, 1 - self.settings["budget"] - mean_g)
        loss = BUDGET_WEIGHT * shortfall * shortfall
        for k, i in enumerate(ids):
            loss += outs[k][1] * self.log_kappa[i] / E
            dg = self.log_kappa[i] / E - 2 * BUDGET_WEIGHT * shortfall / E
            self._backward(self.features[i], outs[k], dg, grad)
        return loss, grad

    def _adam_step(self, ids):
        _, grad = self.loss_and_gradient(ids)
        lr = self.settings["gateLearningRate"]
        self.t += 1
        b1, b2 = 0.9, 0.999
        for k in range(len(self.w)):
            self.m[k] = b1 * self.m[k] + (1 - b1) * grad[k]
            self.v[k] = b2 * self.v[k] + (1 - b2) * grad[k] * grad[k]
            mh, vh = self.m[k] / (1 - b1 ** self.t), self.v[k] / (1 - b2 ** self.t)
            self.w[k] -= lr * mh / (math.sqrt(vh) + 1e-8)

    def _forward(self, phi):
        w = self.w
        hidden = []
        z = w[-1]
        for j in range(HIDDEN):
            a = w[HIDDEN * FEATURES + j] + sum(w[j * FEATURES + f] * phi[f] for f in range(FEATURES))
            hidden.append(math.tanh(a))
            z += w[HIDDEN * FEATURES + HIDDEN + j] * hidden[j]
        return hidden, 1 / (1 + math.exp(-z))

    def _backward(self, phi, out, dg, grad):
        w = self.w
        hidden, g = out
        dz = dg * g * (1 - g)
        grad[-1] += dz
        for j in range(HIDDEN):
            grad[HIDDEN * FEATURES + HIDDEN + j] += dz * hidden[j]
            da = dz * w[HIDDEN * FEATURES + HIDDEN + j] * (1 - hidden[j] * hidden[j])
            grad[HIDDEN * FEATURES + j] += da
            for f in range(FEATURES):
                grad[j * FEATURES + f] += da * phi[f]


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

"""The model families in PyTorch, from the same config fields as src/trainer/models. Each model names
its prunable units and the parameters of each (`unit_params`), and the groups its optimizers keep
apart (`groups`: a frozen unit's group is simply not stepped)."""
import math
import sys
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from . import estimators


def _moe_monitor_kernels(x: torch.Tensor, gram1: torch.Tensor, one_hot: torch.Tensor, label: torch.Tensor, not_label: torch.Tensor,
                         w1: List[torch.Tensor], b1: List[torch.Tensor], w2: List[torch.Tensor], b2: List[torch.Tensor],
                         gate_w: torch.Tensor, gate_b: torch.Tensor, off: Optional[torch.Tensor], mask: Optional[torch.Tensor],
                         every_pruned: bool, trainable: Optional[List[int]], half_share: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """MoeMlp's measurement without a graph in one TorchScript call: gate_and_routing, probe_pass,
    estimators.output_directions_torch, unit_kernels, kernel_rest, served's comparison and Measurer.condition's
    model kernel, op for op the same aten calls in the same order (so the same bits; test_monitor_cost; one
    call fewer: ReLU's backward), without the Python between ~75 small tensor calls. (every kernel and the model's, E+1×n×n float64; E×n bool: the
    probe rows each expert serves, p_e(x_i) ≥ 1/(2E) compared in float64.)"""
    z = x @ gate_w + gate_b
    if off is not None:
        z = z + off
    g = torch.softmax(z, dim=1)
    if mask is not None:
        weighted = g * mask
        g = weighted / (weighted.sum(dim=1, keepdim=True) + 1e-12)
    b1s, b2s = torch.stack(b1).unsqueeze(1), torch.stack(b2).unsqueeze(1)
    w2s = torch.stack(w2)
    pre = x.new_empty(len(w1), x.shape[0], w1[0].shape[1])
    for e in range(len(w1)):
        torch.mm(x, w1[e], out=pre[e])
    pre += b1s
    hid = torch.relu(pre)
    outs = torch.bmm(hid, w2s)
    outs += b2s
    if every_pruned:
        logits = torch.zeros(x.shape[0], one_hot.shape[1], device=x.device, dtype=x.dtype)
    else:
        logits = (g.T.unsqueeze(2) * outs).sum(dim=0)
    log_probs = torch.log_softmax(logits, dim=1)
    top = torch.amax(log_probs.detach().masked_fill(label, -math.inf), dim=1, keepdim=True)
    alive = torch.isfinite(top).to(logits.dtype)
    shift = torch.nan_to_num(top, nan=0.0, neginf=0.0, posinf=0.0)
    q = torch.exp(torch.clamp(log_probs - shift, max=0)) * not_label
    gq = q - one_hot * q.sum(dim=1, keepdim=True)
    norm = torch.sqrt(torch.clamp((gq * gq).sum(dim=1, keepdim=True), min=1e-30))
    u = gq / norm * alive
    ue = g.T.unsqueeze(2) * u
    # ReLU's backward in one call (unit_kernels: a product with the mask `pre > 0`): the same values, a zero
    # where the mask is off (the product's may be −0; the kernels' sums are the same).
    back = torch.ops.aten.threshold_backward(ue @ w2s.transpose(1, 2), pre, 0.0)
    uu = ue @ ue.transpose(1, 2)
    units = (hid @ hid.transpose(1, 2)) * uu + uu + gram1 * (back @ back.transpose(1, 2))
    m = (outs * u).sum(dim=2).T
    s = (g * m).sum(dim=1, keepdim=True)
    r = g * (m - s)
    rest = gram1 * (r @ r.T)
    serves = (g.detach().double() >= half_share).T
    if trainable is None:
        model_kernel = rest + units.sum(dim=0)
    elif len(trainable) == 0:
        model_kernel = rest + torch.zeros_like(rest)
    else:
        model_kernel = rest + units[trainable].sum(dim=0)
    return torch.cat([units.detach(), model_kernel.detach().unsqueeze(0)]).double(), serves


_scripted_monitor_kernels = None


def moe_monitor_kernels(*args):
    """_moe_monitor_kernels, scripted on first use (not at import: most imports never measure). Where a
    torch cannot script it (TorchScript is deprecated upstream and may go), the same function runs eagerly:
    the same ops in the same order, so the same numbers, only ~0.2 ms slower a measurement."""
    global _scripted_monitor_kernels
    if _scripted_monitor_kernels is None:
        try:
            _scripted_monitor_kernels = torch.jit.script(_moe_monitor_kernels)
        except Exception as e:  # noqa: BLE001 — any failure to compile leaves the eager path, which is exact
            print(f"[pltrain] TorchScript unavailable ({type(e).__name__}: {e}); κ monitoring runs eagerly", file=sys.stderr)
            _scripted_monitor_kernels = _moe_monitor_kernels
    return _scripted_monitor_kernels(*args)


class MoeMlp(nn.Module):
    """`moe-mlp`: a dense soft-gated mixture of two-layer experts, o(x) = Σ_e softmax(gate(x))_e·o_e(x),
    o_e(x) = W2_eᵀ relu(W1_eᵀx + b1_e) + b2_e (src/trainer/models/moeMlp.ts). Pruned experts get no
    gate mass."""

    unit_name = "expert"
    task_metric = "accuracy"

    def __init__(self, d, c, config, generator):
        super().__init__()
        experts, h = config["model"]["experts"], config["model"]["hiddenUnits"]
        self.d, self.c, self.h, self.units = d, c, h, experts

        def normal(*shape, std):
            return nn.Parameter(torch.randn(*shape, generator=generator) * std)

        # He initialization for the ReLU layer, as the TF.js model (seeded, not the same numbers).
        self.w1 = nn.ParameterList([normal(d, h, std=math.sqrt(2 / d)) for _ in range(experts)])
        self.b1 = nn.ParameterList([nn.Parameter(torch.zeros(h)) for _ in range(experts)])
        self.w2 = nn.ParameterList([normal(h, c, std=math.sqrt(1 / h)) for _ in range(experts)])
        self.b2 = nn.ParameterList([nn.Parameter(torch.zeros(c)) for _ in range(experts)])
        self.gate_w = normal(d, experts, std=0.01)
        self.gate_b = nn.Parameter(torch.zeros(experts))

    def unit_params(self, e):
        return [self.w1[e], self.b1[e], self.w2[e], self.b2[e]]

    def groups(self):
        return [("gate", [self.gate_w, self.gate_b])] + [(f"expert{e}", self.unit_params(e)) for e in range(self.units)]

    def gate(self, x, pruned, mask=None):
        """The routing weights g (n×E) the experts' outputs are mixed with."""
        return self.gate_and_routing(x, pruned, mask)[0]

    def gate_and_routing(self, x, pruned, mask=None):
        """(g, routing): the mixing weights and this call's routing before the pruning gate's soft mask
        (the step's routing shares read it; no second gate pass). Returned, not kept on the model: the
        probe's pass between the step's forward and its read would replace a kept one."""
        z = x @ self.gate_w + self.gate_b
        if pruned:
            off = torch.zeros(self.units, device=x.device, dtype=x.dtype)
            off[list(pruned)] = -1e9
            z = z + off
        routing = torch.softmax(z, dim=1)
        g = routing
        if mask is not None:
            # The pruning gate's soft mask scales each expert's routing weight, renormalized:
            # p_e ∝ m_e·e^{z_e}, so m_e = 0 is exactly a pruned expert (moeForward.ts).
            weighted = routing * mask
            g = weighted / (weighted.sum(dim=1, keepdim=True) + 1e-12)
        return g, routing

    def probe_pass(self, x, pruned, mask=None):
        """(logits, parts): the forward pass of the probe with every expert at once (E×n×h batches), and
        the forward quantities the closed-form kernels read (`parts`), so one measurement runs the gate and
        the experts once instead of once per kernel and per expert. The logits equal forward()'s up to
        float rounding (the experts' outputs summed in another order)."""
        g = self.gate(x, pruned, mask)  # n×E
        b1, b2 = torch.stack(list(self.b1)).unsqueeze(1), torch.stack(list(self.b2)).unsqueeze(1)
        w2 = torch.stack(list(self.w2))  # E×h×c
        if torch.is_grad_enabled():
            pre = torch.stack([x @ w for w in self.w1]) + b1  # E×n×h
            hid = torch.relu(pre)
            outs = hid @ w2 + b2  # E×n×c
        else:
            # Without a graph (monitoring): the same products written in place, no stacked copy.
            pre = x.new_empty(self.units, x.shape[0], self.h)
            for e, w in enumerate(self.w1):
                torch.mm(x, w, out=pre[e])
            pre += b1
            hid = torch.relu(pre)
            outs = torch.bmm(hid, w2)
            outs += b2
        if len(pruned) == self.units:
            logits = torch.zeros(x.shape[0], self.c, device=x.device, dtype=x.dtype)
        else:
            logits = (g.T.unsqueeze(2) * outs).sum(dim=0)  # a pruned expert has g = 0
        return logits, {"g": g, "pre": pre, "hid": hid, "w2": w2, "outs": outs}

    def unit_kernels(self, x, u, pruned, mask=None, parts=None):
        """Every expert's tangent kernel of s_i = u_iᵀ z(x_i), z the gated mixture, in closed form from
        forward quantities (tangentKernel.ts twoLayerTangentKernel with u_i scaled by the gate g_e(x_i),
        since ∂s_i/∂θ_e = g_e(x_i)·∂(u_iᵀ o_e(x_i))/∂θ_e): E×n×n, differentiable w.r.t. every weight. The
        same numbers as the autograd Jacobians (estimators.unit_kernels; tests/test_estimators.py), at a
        fraction of the cost: no per-example backward passes. Every expert in one batch (E×n×·). `parts` may
        carry "gram1", X·Xᵀ + 1 of these inputs (no weight in it: a caller with a fixed probe makes it once)."""
        parts = parts or self.probe_pass(x, pruned, mask)[1]
        pre, hid = parts["pre"], parts["hid"]
        ue = parts["g"].T.unsqueeze(2) * u  # E×n×c: u_i scaled by g_e(x_i)
        back = (ue @ parts["w2"].transpose(1, 2)) * (pre > 0)  # E×n×h (the mask promoted to 0/1 inside the mul)
        uu = ue @ ue.transpose(1, 2)
        gram1 = parts["gram1"] if "gram1" in parts else x @ x.T + 1
        return (hid @ hid.transpose(1, 2)) * uu + uu + gram1 * (back @ back.transpose(1, 2))

    def kernel_rest(self, x, u, pruned, mask=None, parts=None):
        """The gate's kernel K_gate = (X·Xᵀ + 1) ⊙ (R·Rᵀ), R_ie = p_e(x_i)·(u_iᵀo_e(x_i) − s_i) (∂s_i/∂ gate
        logit e; docs/method.md, contract 4): the part of the model's kernel outside the experts."""
        parts = parts or self.probe_pass(x, pruned, mask)[1]
        g = parts["g"]
        m = (parts["outs"] * u).sum(dim=2).T  # n×E: u_iᵀo_e(x_i)
        s = (g * m).sum(dim=1, keepdim=True)
        r = g * (m - s)
        gram1 = parts["gram1"] if "gram1" in parts else x @ x.T + 1
        return gram1 * (r @ r.T)

    @property
    def serve_share(self):
        """The routing share at which an expert serves a probe row (estimators.serve_share)."""
        return estimators.serve_share(self.units)

    @staticmethod
    def served_rows(serves, pruned):
        """Per expert, the rows its row of `serves` (E×n booleans, host lists) marks; none for a pruned one."""
        return [[] if e in pruned else [i for i, yes in enumerate(row) if yes] for e, row in enumerate(serves)]

    def served(self, x, pruned, mask=None, parts=None):
        """Per expert, the probe rows it serves: p_e(x_i) ≥ 1/(2E) (contract 8); none for a pruned one."""
        with torch.no_grad():
            g = parts["g"] if parts else self.gate(x, pruned, mask)
            # Compared in float64, as a Python float (one device → host read for the whole table).
            serves = (g.detach().double() >= self.serve_share).T.cpu().tolist()
        return self.served_rows(serves, pruned)

    def forward(self, x, pruned=frozenset(), mask=None):
        return self.forward_with_routing(x, pruned, mask)[0]

    def forward_with_routing(self, x, pruned=frozenset(), mask=None):
        """(logits, routing): the output and this call's routing before the soft mask (n×E; None when every
        expert is pruned: no gate runs, nothing is routed)."""
        if len(pruned) == self.units:
            return torch.zeros(x.shape[0], self.c, device=x.device, dtype=x.dtype), None
        g, routing = self.gate_and_routing(x, pruned, mask)
        out = 0
        for e in range(self.units):
            if e in pruned:
                continue  # no gate mass: not computed
            o = torch.relu(x @ self.w1[e] + self.b1[e]) @ self.w2[e] + self.b2[e]
            out = out + g[:, e:e + 1] * o
        return out, routing


def _grid(features):
    side = int(round(math.sqrt(features)))
    return (side, side) if side * side == features else (1, features)


class Vgg(nn.Module):
    """`vgg`: blocks of 3×3 'same' conv + ReLU + 2×2 max-pool, then a dense classifier
    (src/trainer/models/vgg.ts). Unit g is channel group g: in every conv layer its own `hiddenUnits`
    filters (reading all input channels) and biases; a pruned group's channels are exactly zero."""

    unit_name = "channel group"
    task_metric = "accuracy"

    def __init__(self, features, classes, config, generator):
        super().__init__()
        groups, c, layers = config["model"]["experts"], config["model"]["hiddenUnits"], config["model"]["layers"]
        self.units, self.c, self.per_group = groups, classes, c
        self.rows, self.cols = _grid(features)
        h, w = self.rows, self.cols
        for _ in range(layers):
            h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise ValueError(f"{layers} conv blocks pool a {self.rows}×{self.cols} image away to nothing: use fewer layers")
        normal = lambda *shape, std: nn.Parameter(torch.randn(*shape, generator=generator) * std)
        self.w = nn.ModuleList()
        self.b = nn.ModuleList()
        for l in range(layers):
            cin = 1 if l == 0 else groups * c
            self.w.append(nn.ParameterList([normal(c, cin, 3, 3, std=math.sqrt(2 / (9 * cin))) for _ in range(groups)]))
            self.b.append(nn.ParameterList([nn.Parameter(torch.zeros(c)) for _ in range(groups)]))
        flat = h * w * groups * c
        self.dense_w = normal(flat, classes, std=math.sqrt(1 / flat))
        self.dense_b = nn.Parameter(torch.zeros(classes))

    def unit_params(self, g):
        return [p for l in range(len(self.w)) for p in (self.w[l][g], self.b[l][g])]

    def groups(self):
        return [("dense", [self.dense_w, self.dense_b])] + [(f"group{g}", self.unit_params(g)) for g in range(self.units)]

    def forward(self, x, pruned=frozenset(), mask=None):
        h = x.reshape(x.shape[0], 1, self.rows, self.cols)
        for ws, bs in zip(self.w, self.b):
            weight = torch.cat([torch.zeros_like(w) if g in pruned else w for g, w in enumerate(ws)])
            bias = torch.cat([torch.zeros_like(b) if g in pruned else b for g, b in enumerate(bs)])
            h = F.max_pool2d(torch.relu(F.conv2d(h, weight, bias, padding=1)), 2)
            if mask is not None:
                # The pruning gate's soft mask scales group g's channels (pooling commutes with a scale ≥ 0).
                h = h * mask.repeat_interleave(self.per_group).reshape(1, -1, 1, 1)
        return h.reshape(h.shape[0], -1) @ self.dense_w + self.dense_b


class BertEncoder(nn.Module):
    """`bert-encoder` (src/trainer/models/bertEncoder.ts): each image row is a token, a learned [CLS]
    token first; Linear(cols→dModel) + positions, LayerNorm; `layers` post-LN blocks (attention, then a
    tanh-GELU FFN); the class from the final [CLS] state. Unit h is attention head h of every layer: its
    W_q, b_q, W_k, W_v, b_v and its rows of W_o; a pruned head's are zeros in the forward pass."""

    unit_name = "head"
    task_metric = "accuracy"

    def __init__(self, features, classes, config, generator):
        super().__init__()
        m = config["model"]
        H, D, layers, Fh = m["experts"], m["dModel"], m["layers"], m["hiddenUnits"]
        if D % H:
            raise ValueError(f"dModel {D} must be a multiple of the {H} attention heads")
        self.units, self.c, self.D, self.dh = H, classes, D, D // H
        self.rows, self.cols = _grid(features)
        normal = lambda *shape, std: nn.Parameter(torch.randn(*shape, generator=generator) * std)
        zeros = lambda *shape: nn.Parameter(torch.zeros(*shape))
        ones = lambda *shape: nn.Parameter(torch.ones(*shape))
        self.tok_w, self.tok_b = normal(self.cols, D, std=math.sqrt(1 / self.cols)), zeros(D)
        self.cls, self.pos = normal(D, std=1.0), normal(self.rows + 1, D, std=0.1)
        self.ln_g, self.ln_b = ones(D), zeros(D)
        self.out_w, self.out_b = normal(D, classes, std=math.sqrt(1 / D)), zeros(classes)
        self.heads = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for _ in range(layers):
            layer = nn.ModuleList()
            for _ in range(H):
                head = nn.Module()
                head.wq, head.bq = normal(D, self.dh, std=math.sqrt(1 / D)), zeros(self.dh)
                head.wk = normal(D, self.dh, std=math.sqrt(1 / D))
                head.wv, head.bv = normal(D, self.dh, std=math.sqrt(1 / D)), zeros(self.dh)
                head.wo = normal(self.dh, D, std=math.sqrt(1 / D))
                layer.append(head)
            self.heads.append(layer)
            blk = nn.Module()
            blk.bo, blk.ln1g, blk.ln1b = zeros(D), ones(D), zeros(D)
            blk.ff1w, blk.ff1b = normal(D, Fh, std=math.sqrt(2 / D)), zeros(Fh)
            blk.ff2w, blk.ff2b = normal(Fh, D, std=math.sqrt(1 / Fh)), zeros(D)
            blk.ln2g, blk.ln2b = ones(D), zeros(D)
            self.blocks.append(blk)

    def unit_params(self, h):
        return [p for layer in self.heads for p in (layer[h].wq, layer[h].bq, layer[h].wk, layer[h].wv, layer[h].bv, layer[h].wo)]

    def groups(self):
        head_ids = {id(p) for h in range(self.units) for p in self.unit_params(h)}
        return [("shared", [p for p in self.parameters() if id(p) not in head_ids])] + [(f"head{h}", self.unit_params(h)) for h in range(self.units)]

    def forward(self, x, pruned=frozenset(), mask=None):
        b, T, D, H, dh = x.shape[0], self.rows + 1, self.D, self.units, self.dh
        ln = lambda t, g, bb: F.layer_norm(t, (D,), g, bb, 1e-5)
        tokens = x.reshape(b, self.rows, self.cols) @ self.tok_w + self.tok_b
        h = ln(torch.cat([self.cls.expand(b, 1, D), tokens], dim=1) + self.pos, self.ln_g, self.ln_b)
        for layer, blk in zip(self.heads, self.blocks):
            side = lambda name, dim: torch.cat([torch.zeros_like(getattr(hd, name)) if k in pruned else getattr(hd, name) for k, hd in enumerate(layer)], dim=dim)
            split = lambda t: t.reshape(b, T, H, dh).transpose(1, 2)
            q = split(h @ side("wq", 1) + side("bq", 0))
            k = split(h @ side("wk", 1))
            v = split(h @ side("wv", 1) + side("bv", 0))
            attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), dim=-1)
            merged = (attention @ v).transpose(1, 2).reshape(b, T, H * dh)
            wo = side("wo", 0)
            if mask is not None:
                # The pruning gate's soft mask scales head k's rows of W_o: its output before the merge.
                wo = wo * mask.repeat_interleave(dh).reshape(-1, 1)
            h = ln(h + merged @ wo + blk.bo, blk.ln1g, blk.ln1b)
            ff = F.gelu(h @ blk.ff1w + blk.ff1b, approximate="tanh") @ blk.ff2w + blk.ff2b
            h = ln(h + ff, blk.ln2g, blk.ln2b)
        return h[:, 0] @ self.out_w + self.out_b


LOAD_BALANCE_COEFFICIENT = 0.01  # Switch's load-balancing weight (the paper's α = 10⁻²)
MASKED_LOGIT = -1e9  # a pruned expert's router logit: its probability underflows to exactly 0


class _Mlp(nn.Module):
    """A two-layer ReLU MLP dModel → hidden → dModel (an expert or a dense FFN)."""

    def __init__(self, d, hidden, normal):
        super().__init__()
        self.w1, self.b1 = normal(d, hidden, std=math.sqrt(2 / d)), nn.Parameter(torch.zeros(hidden))
        self.w2, self.b2 = normal(hidden, d, std=math.sqrt(1 / hidden)), nn.Parameter(torch.zeros(d))

    def forward(self, x):
        return torch.relu(x @ self.w1 + self.b1) @ self.w2 + self.b2


class SwitchTransformer(nn.Module):
    """`switch-transformer` (src/trainer/models/switchTransformer.ts): a character-level decoder-only LM.
    Token + learned position embeddings; `layers` pre-LN blocks x += MHA(LN(x)) (causal; 4, 2 or 1
    heads, not units), x += FFN(LN(x)); every other FFN counting back from the last block is a Switch
    FFN: softmax router, top-1 dispatch (each token through its argmax expert only, scaled by that
    probability p_top), Switch's load-balancing loss E_live·Σ_e f_e·P_e per Switch layer. Unit e = expert
    e of every Switch layer; pruning e masks its router logit. Logits are token-major, [b·T, V]."""

    unit_name = "expert"
    task_metric = "perplexity"

    def __init__(self, vocabulary, config, generator):
        super().__init__()
        m = config["model"]
        E, D, layers, Fh, ctx = m["experts"], m["dModel"], m["layers"], m["hiddenUnits"], m["contextLength"]
        self.units, self.c, self.D, self.context_length = E, vocabulary, D, ctx
        self.heads = next(h for h in (4, 2, 1) if D % h == 0)
        self.switch_blocks = [l for l in range(layers) if (layers - 1 - l) % 2 == 0]
        normal = lambda *shape, std: nn.Parameter(torch.randn(*shape, generator=generator) * std)
        zeros = lambda *shape: nn.Parameter(torch.zeros(*shape))
        ones = lambda *shape: nn.Parameter(torch.ones(*shape))
        self.tokens, self.positions = normal(vocabulary, D, std=1.0), normal(ctx, D, std=0.1)
        self.blocks = nn.ModuleList()
        for l in range(layers):
            blk = nn.Module()
            blk.ln1g, blk.ln1b = ones(D), zeros(D)
            blk.wq, blk.wk, blk.wv, blk.wo = (normal(D, D, std=math.sqrt(1 / D)) for _ in range(4))
            blk.bo, blk.ln2g, blk.ln2b = zeros(D), ones(D), zeros(D)
            if l in self.switch_blocks:
                # A small router start: routing begins near uniform.
                blk.router_w, blk.router_b = normal(D, E, std=0.1 / math.sqrt(D)), zeros(E)
                blk.experts = nn.ModuleList([_Mlp(D, Fh, normal) for _ in range(E)])
            else:
                blk.dense = _Mlp(D, Fh, normal)
            self.blocks.append(blk)
        self.ln_g, self.ln_b = ones(D), zeros(D)
        self.out_w, self.out_b = normal(D, vocabulary, std=math.sqrt(1 / D)), zeros(vocabulary)

    def expert(self, l, e):
        return self.blocks[l].experts[e]

    def unit_params(self, e):
        return [p for l in self.switch_blocks for p in self.expert(l, e).parameters()]

    def groups(self):
        expert_ids = {id(p) for e in range(self.units) for p in self.unit_params(e)}
        return [("shared", [p for p in self.parameters() if id(p) not in expert_ids])] + [(f"expert{e}", self.unit_params(e)) for e in range(self.units)]

    @staticmethod
    def routed_shares(routed):
        """The fraction of a call's tokens dispatched to each expert (all Switch layers), from its `routed`."""
        total = sum(routed)
        return [r / total for r in routed] if total else None

    @staticmethod
    def aux_loss(aux):
        """The load-balancing term of the objective, from a call's `aux`."""
        return LOAD_BALANCE_COEFFICIENT * aux

    def forward(self, x, pruned=frozenset(), mask=None, trace=None):
        return self.forward_with_load(x, pruned, mask, trace)[0]

    def forward_with_load(self, x, pruned=frozenset(), mask=None, trace=None):
        """x: token ids [b, T] → (logits [b·T, V], aux, routed): this call's load-balancing loss (summed over
        the Switch layers, in the graph) and tokens per expert (summed likewise). Returned, not kept on the
        model, so that the probe's pass between the step's forward and the loop's read cannot replace them.
        `trace` (a list) collects, per Switch layer, the normalized input, router probabilities, dispatch and
        output tensors (still in the graph)."""
        b, T = x.shape
        if T > self.context_length:
            raise ValueError(f"sequences of {T} tokens are longer than contextLength {self.context_length}")
        D, H, E, N = self.D, self.heads, self.units, b * T
        dh = D // H
        ln = lambda t, g, bb: F.layer_norm(t, (D,), g, bb, 1e-5)
        h = (self.tokens[x.reshape(-1)] + self.positions[:T].repeat(b, 1))  # [N, D]
        causal = torch.triu(torch.full((T, T), MASKED_LOGIT, dtype=h.dtype, device=h.device), diagonal=1)
        off = None
        if pruned:
            off = torch.zeros(E, dtype=h.dtype, device=h.device)
            off[list(pruned)] = MASKED_LOGIT
        live = E - len(pruned)
        routed = [0] * E
        aux = h.new_zeros(())
        for l, blk in enumerate(self.blocks):
            a = ln(h, blk.ln1g, blk.ln1b)
            split = lambda t: t.reshape(b, T, H, dh).transpose(1, 2)
            q, k, v = split(a @ blk.wq), split(a @ blk.wk), split(a @ blk.wv)
            attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh) + causal, dim=-1)
            merged = (attention @ v).transpose(1, 2).reshape(N, D)
            h = h + merged @ blk.wo + blk.bo
            f = ln(h, blk.ln2g, blk.ln2b)
            if l not in self.switch_blocks:
                h = h + blk.dense(f)
                continue
            z = f @ blk.router_w + blk.router_b
            probs = torch.softmax(z + off if off is not None else z, dim=1)
            if mask is not None:
                # The pruning gate's soft mask scales each expert's router probability, renormalized.
                weighted = probs * mask
                probs = weighted / (weighted.sum(dim=1, keepdim=True) + 1e-12)
            expert_of = probs.detach().argmax(dim=1)
            out = torch.zeros_like(f)
            counts = torch.bincount(expert_of, minlength=E).tolist()  # one host read per Switch layer
            for e in range(E):
                if counts[e]:
                    rows = (expert_of == e).nonzero().squeeze(1)
                    out = out.index_copy(0, rows, blk.experts[e](f[rows]))
            p_top = probs.gather(1, expert_of.unsqueeze(1))
            out = out * p_top
            # Load balancing: E_live·Σ f_e·P_e (f from the hard decisions, constant; P carries the gradient).
            fractions = torch.tensor(counts, dtype=h.dtype, device=h.device) / N
            aux = aux + live * (probs.mean(dim=0) * fractions).sum()
            routed = [r + c for r, c in zip(routed, counts)]
            if trace is not None:
                trace.append({"block": l, "input": f, "probs": probs, "expert_of": expert_of, "output": out})
            h = h + out
        return ln(h, self.ln_g, self.ln_b) @ self.out_w + self.out_b, aux, routed

    def expert_kernel_alone(self, l, e, x, u):
        """The two-layer closed-form tangent kernel of u_iᵀ·expert_e^l(x_i) w.r.t. the expert's own
        parameters (tangentKernel.ts; moe-mlp's formula with the gate factor 1): n×n."""
        ex = self.expert(l, e)
        pre = x @ ex.w1 + ex.b1
        hid = torch.relu(pre)
        back = (pre > 0).to(x.dtype) * (u @ ex.w2.T)
        uu = u @ u.T
        return (hid @ hid.T) * uu + uu + (x @ x.T + 1) * (back @ back.T)


def create_model(config, data, device):
    generator = torch.Generator().manual_seed(config["seed"])
    family = config["model"]["family"]
    if family == "moe-mlp":
        model = MoeMlp(data.features, data.classes, config, generator)
    elif family == "vgg":
        model = Vgg(data.features, data.classes, config, generator)
    elif family == "bert-encoder":
        model = BertEncoder(data.features, data.classes, config, generator)
    elif family == "switch-transformer":
        if getattr(data, "kind", "image") != "text":
            raise ValueError("the switch-transformer family is a language model: set data.source to \"text\"")
        model = SwitchTransformer(data.classes, config, generator)
    else:
        raise ValueError(f"model.family {family} is not in the pytorch engine")
    return model.to(device)

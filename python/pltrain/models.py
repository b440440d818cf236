"""The model families in PyTorch, from the same config fields as src/trainer/models. Each model names
its prunable units and the parameters of each (`unit_params`), and the groups its optimizers keep
apart (`groups`: a frozen unit's group is simply not stepped)."""
import math

import torch
from torch import nn


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

    def gate(self, x, pruned):
        z = x @ self.gate_w + self.gate_b
        if pruned:
            mask = torch.zeros(self.units, device=x.device, dtype=x.dtype)
            mask[list(pruned)] = -1e9
            z = z + mask
        return torch.softmax(z, dim=1)

    def unit_kernels(self, x, u, pruned):
        """Every expert's tangent kernel of s_i = u_iᵀ z(x_i), z the gated mixture, in closed form from
        forward quantities (tangentKernel.ts twoLayerTangentKernel with u_i scaled by the gate g_e(x_i),
        since ∂s_i/∂θ_e = g_e(x_i)·∂(u_iᵀ o_e(x_i))/∂θ_e): E×n×n, differentiable w.r.t. every weight. The
        same numbers as the autograd Jacobians (estimators.unit_kernels; tests/test_estimators.py), at a
        fraction of the cost: no per-example backward passes."""
        g = self.gate(x, pruned)  # n×E
        gram1 = x @ x.T + 1
        out = []
        for e in range(self.units):
            ue = u * g[:, e:e + 1]
            pre = x @ self.w1[e] + self.b1[e]
            hid = torch.relu(pre)
            back = (pre > 0).to(x.dtype) * (ue @ self.w2[e].T)
            uu = ue @ ue.T
            out.append((hid @ hid.T) * uu + uu + gram1 * (back @ back.T))
        return torch.stack(out)

    def forward(self, x, pruned=frozenset()):
        if len(pruned) == self.units:
            return torch.zeros(x.shape[0], self.c, device=x.device, dtype=x.dtype)
        g = self.gate(x, pruned)
        out = 0
        for e in range(self.units):
            if e in pruned:
                continue  # no gate mass: not computed
            o = torch.relu(x @ self.w1[e] + self.b1[e]) @ self.w2[e] + self.b2[e]
            out = out + g[:, e:e + 1] * o
        return out


def create_model(config, data, device):
    generator = torch.Generator().manual_seed(config["seed"])
    family = config["model"]["family"]
    if family == "moe-mlp":
        model = MoeMlp(data.features, data.classes, config, generator)
    else:
        raise ValueError(f"model.family {family} is not in the pytorch engine yet")
    return model.to(device)

"""Same-weights check: `python -m pltrain.samecheck FIXTURE.json` measures μ, L_f, κ per expert (over the probe examples
it serves) and κ of the model's kernel of a moe-mlp (or, with "family": "switch-transformer", a Switch LM) whose weights, probe batch and damping the fixture gives, and prints them as one JSON line.
test/unit/pytorch-same-weights.test.ts writes the fixture, runs this, and compares with the
TypeScript estimators on the same weights."""
import json
import sys

import torch

from .models import MoeMlp, SwitchTransformer
from .train import Measurer, SwitchMeasurer


def measure_switch(fixture, dtype):
    """A switch-transformer with the fixture's weights (named as the TS model's variables), measured on
    the fixture's probe sequences: each expert's stats over the tokens routed to it, and the model's κ."""
    config = {"model": fixture["model"]}
    model = SwitchTransformer(fixture["vocabulary"], config, torch.Generator().manual_seed(0)).to(dtype)
    w = fixture["weights"]
    tensor = lambda name, like: torch.tensor(w[name], dtype=dtype).reshape(like.shape)
    with torch.no_grad():
        model.tokens.copy_(tensor("embed/tokens", model.tokens))
        model.positions.copy_(tensor("embed/positions", model.positions))
        for l, blk in enumerate(model.blocks):
            for name in ("ln1g", "ln1b", "wq", "wk", "wv", "wo", "bo", "ln2g", "ln2b"):
                getattr(blk, name).copy_(tensor(f"layer{l}/{name}", getattr(blk, name)))
            mlps = [(f"layer{l}/expert{e}", ex) for e, ex in enumerate(blk.experts)] if l in model.switch_blocks else [(f"layer{l}/dense", blk.dense)]
            if l in model.switch_blocks:
                blk.router_w.copy_(tensor(f"layer{l}/router/w", blk.router_w))
                blk.router_b.copy_(tensor(f"layer{l}/router/b", blk.router_b))
            for prefix, mlp in mlps:
                for name in ("w1", "b1", "w2", "b2"):
                    getattr(mlp, name).copy_(tensor(f"{prefix}/{name}", getattr(mlp, name)))
        for ours, theirs in (("ln_g", "final/lnG"), ("ln_b", "final/lnB"), ("out_w", "output/w"), ("out_b", "output/b")):
            getattr(model, ours).copy_(tensor(theirs, getattr(model, ours)))
    T = fixture["model"]["contextLength"]
    x = torch.tensor(fixture["x"]).reshape(-1, T)
    y = torch.tensor(fixture["y"]).reshape(-1, T)
    measurer = SwitchMeasurer(model, x, y, fixture["damping"], fixture["probeSize"])
    units = measurer.measure(set(), frozenset(), list(range(model.units)))
    return {"units": units, "modelKappa": measurer.model_kappa, "tokens": measurer.tokens}


def measure(fixture):
    dtype = torch.float64 if fixture.get("dtype") == "float64" else torch.float32
    if fixture.get("family") == "switch-transformer":
        return measure_switch(fixture, dtype)
    E, d, c, h = fixture["experts"], fixture["d"], fixture["c"], fixture["h"]
    model = MoeMlp(d, c, {"model": {"experts": E, "hiddenUnits": h}}, torch.Generator().manual_seed(0)).to(dtype)
    with torch.no_grad():
        for e in range(E):
            model.w1[e].copy_(torch.tensor(fixture["w1"][e], dtype=dtype).reshape(d, h))
            model.b1[e].copy_(torch.tensor(fixture["b1"][e], dtype=dtype))
            model.w2[e].copy_(torch.tensor(fixture["w2"][e], dtype=dtype).reshape(h, c))
            model.b2[e].copy_(torch.tensor(fixture["b2"][e], dtype=dtype))
        model.gate_w.copy_(torch.tensor(fixture["gateW"], dtype=dtype).reshape(d, E))
        model.gate_b.copy_(torch.tensor(fixture["gateB"], dtype=dtype))
    x = torch.tensor(fixture["x"], dtype=dtype).reshape(-1, d)
    measurer = Measurer(model, x, torch.tensor(fixture["labels"]), fixture["damping"])
    units = measurer.measure(set(), set(), list(range(E)))
    return {"units": units, "modelKappa": measurer.model_kappa}


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        print(json.dumps(measure(json.load(f))))

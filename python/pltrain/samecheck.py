"""Same-weights check: `python -m pltrain.samecheck FIXTURE.json` measures μ, L_f, κ per expert (over the probe examples
it serves) and κ of the model's kernel of a moe-mlp whose weights, probe batch and damping the fixture gives, and prints them as one JSON line.
test/unit/pytorch-same-weights.test.ts writes the fixture, runs this, and compares with the
TypeScript estimators on the same weights."""
import json
import sys

import torch

from .models import MoeMlp
from .train import Measurer


def measure(fixture):
    dtype = torch.float64 if fixture.get("dtype") == "float64" else torch.float32
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

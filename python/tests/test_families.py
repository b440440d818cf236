"""The families without a closed-form kernel (vgg, bert-encoder): their per-unit kernels from the one
batched backward equal J·Jᵀ from per-example gradients; a pruned unit is out of the forward pass."""
import numpy as np
import pytest
import torch

from pltrain import estimators
from pltrain.config import resolve
from pltrain.models import BertEncoder, Vgg

CASES = {
    "vgg": (Vgg, {"family": "vgg", "experts": 3, "hiddenUnits": 2, "layers": 2}),
    "bert-encoder": (BertEncoder, {"family": "bert-encoder", "experts": 2, "dModel": 8, "layers": 2, "hiddenUnits": 8}),
}


def build(name, seed=1):
    cls, model = CASES[name]
    config = resolve({"engine": "pytorch", "model": model})
    return cls(64, 5, config, torch.Generator().manual_seed(seed)).double()


@pytest.mark.parametrize("name", CASES)
def test_batched_unit_kernels_equal_per_example_gradients(name):
    model = build(name)
    x = torch.rand(5, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    u = torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    s = (u * model(x)).sum(1)
    kernels = estimators.unit_kernels(s, [model.unit_params(e) for e in range(model.units)], False)
    for e in range(model.units):
        rows = []
        for i in range(5):
            si = (u[i] * model(x[i:i + 1])[0]).sum()
            rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(si, model.unit_params(e))]))
        j = torch.stack(rows)
        np.testing.assert_allclose(kernels[e].detach().numpy(), (j @ j.T).detach().numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_a_pruned_unit_is_out_of_the_forward_pass(name):
    model = build(name)
    x = torch.rand(3, 64, dtype=torch.float64)
    before = model(x, frozenset({1})).detach()
    with torch.no_grad():
        for p in model.unit_params(1):
            p.add_(torch.randn_like(p))
    np.testing.assert_array_equal(model(x, frozenset({1})).detach().numpy(), before.numpy())
    assert not np.allclose(model(x).detach().numpy(), before.numpy())


@pytest.mark.parametrize("name", CASES)
def test_units_partition_their_parameters(name):
    model = build(name)
    owned = [id(p) for e in range(model.units) for p in model.unit_params(e)]
    assert len(owned) == len(set(owned))
    grouped = [id(p) for _, ps in model.groups() for p in ps]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())

"""The families without a closed-form kernel (vgg, bert-encoder): their per-unit kernels from the one
batched backward equal J·Jᵀ from per-example gradients; a pruned unit is out of the forward pass."""
import numpy as np
import pytest
import torch

from finite_difference import directional_derivative
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


@pytest.mark.parametrize("name", CASES)
def test_regularizer_gradient_follows_u_and_the_output_bias_by_finite_differences(name):
    """Contract 7 in float64: ⟨∇κ̃, d⟩ from `Measurer.regularizer` equals the central difference of κ of
    the model's kernel along a random direction d of every weight, u(θ) and the output bias included.
    Holding u fixed gives a visibly different gradient (checked, so the test can fail)."""
    from pltrain.train import Measurer

    torch.manual_seed(0)
    model = build(name)
    n, gen = 6, torch.Generator().manual_seed(4)
    probe_x = torch.rand(n, 64, dtype=torch.float64, generator=gen)
    probe_y = torch.tensor([0, 1, 2, 3, 4, 1])
    measurer = Measurer(model, probe_x, probe_y, 1e-3)
    params = list(model.parameters())
    direction = [torch.randn(p.shape, dtype=p.dtype, generator=gen) for p in params]
    everything = list(range(model.units))

    def kappa():
        measurer.measure(set(), set(), everything)
        return measurer.model_kappa

    units_k, rest_k, served = measurer.kernels(frozenset(), True)
    _, model_kernel, v_min, v_max = measurer.condition(units_k, rest_k, served, set(), frozenset(), everything)
    reg = measurer.regularizer(model_kernel, v_min, v_max)
    assert reg.item() == pytest.approx(measurer.model_kappa, rel=1e-9)  # the surrogate's value is κ
    grads = torch.autograd.grad(reg, params, retain_graph=True, allow_unused=True)
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, direction) if g is not None)
    held = estimators.kappa_surrogates(model_kernel.unsqueeze(0), [v_min], [v_max], 1e-3)[0]
    held_grads = torch.autograd.grad(held, params, allow_unused=True)
    u_fixed = sum(float((g * d).sum()) for g, d in zip(held_grads, direction) if g is not None)

    numeric = directional_derivative(params, direction, kappa)
    assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-9 * abs(measurer.model_kappa))
    assert abs(u_fixed - numeric) > 1e-3 * abs(numeric)

"""The estimators against closed forms and float64 references, including the degenerate cases
(dead unit, zero kernel, singular kernel, collapsed gate)."""
import math

import numpy as np
import pytest
import torch

from pltrain import estimators
from pltrain.models import MoeMlp

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_smooth_damping_is_exactly_the_floor_when_singular():
    assert estimators.damped_kappa(2.0, 1.0, 1e-6) == pytest.approx(2.0 / (1.0 + 2e-6), rel=1e-15)
    assert estimators.damped_kappa(2.0, 0.0, 1e-6) == 1e6
    assert estimators.damped_kappa(1.0, 1e-7, 1e-6) == pytest.approx(1 / 1.1e-6, rel=1e-12)  # μ below δ·L_f: near, under the floor
    assert estimators.damped_kappa(0.0, 0.0, 0.02) == 50.0  # zero kernel: 1/δ, never NaN
    assert estimators.damped_kappa(1.0, -1e-9, 0.02) == 50.0  # round-off below 0 is 0


def test_conditioning_of_a_known_spectrum():
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(5, 5)))
    lam = np.array([0.5, 1, 2, 3, 8.0])
    k = q @ np.diag(lam) @ q.T
    c = estimators.conditioning(k, 1e-6)
    assert c["mu"] == pytest.approx(0.5, rel=1e-12)
    assert c["lf"] == pytest.approx(8.0, rel=1e-12)
    assert c["kappa"] == pytest.approx(8.0 / (0.5 + 8e-6), rel=1e-12)
    assert abs(abs(c["vMin"] @ q[:, 0]) - 1) < 1e-10
    assert abs(abs(c["vMax"] @ q[:, 4]) - 1) < 1e-10


def test_conditioning_symmetrizes_clamps_and_refuses_nan():
    k = np.array([[2.0, 1.0 + 1e-7], [1.0 - 1e-7, 2.0]])
    c = estimators.conditioning(k, 1e-6)
    assert c["mu"] == pytest.approx(1.0) and c["lf"] == pytest.approx(3.0)
    # Rank one (a dead unit's U·Uᵀ part only): λ_min rounds to ±ε, reported as 0, κ = 1/δ.
    v = np.array([1.0, 2.0, 3.0])
    c = estimators.conditioning(np.outer(v, v), 1e-6)
    assert c["mu"] >= 0 and c["kappa"] == 1e6
    z = estimators.conditioning(np.zeros((3, 3)), 1e-3)
    assert (z["mu"], z["lf"], z["kappa"]) == (0.0, 0.0, 1000.0)
    with pytest.raises(ValueError):
        estimators.conditioning(np.array([[1.0, math.nan], [math.nan, 1.0]]), 1e-6)


def test_output_directions_closed_form_and_no_underflow():
    logits = np.array([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0], [200.0, 0.0, 0.0]])
    log_probs = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
    y = np.eye(3)[[0, 2, 0]]
    u = estimators.output_directions(log_probs, y)
    for i in range(2):
        g = np.exp(log_probs[i]) - y[i]
        np.testing.assert_allclose(u[i], g / np.linalg.norm(g), rtol=1e-12)
    # A margin of 200: softmax − y is 0 in float64, the direction is not.
    assert np.linalg.norm(u[2]) == pytest.approx(1.0)
    np.testing.assert_allclose(u[2], np.array([-2, 1, 1]) / math.sqrt(6), rtol=1e-12)
    # A fitted soft-label example has no pull.
    assert not estimators.output_directions(np.log(np.array([[0.5, 0.5]])), np.array([[0.5, 0.5]])).any()


def two_layer_kernel(x, u, w1, b1, w2):
    """tangentKernel.ts's closed form, in float64: K = (H·Hᵀ)⊙(U·Uᵀ) + U·Uᵀ + (X·Xᵀ + 1)⊙(G·Gᵀ)."""
    pre = x @ w1 + b1
    hid = np.maximum(pre, 0)
    back = (pre > 0) * (u @ w2.T)
    uu = u @ u.T
    return (hid @ hid.T) * uu + uu + (x @ x.T + 1) * (back @ back.T)


@pytest.mark.parametrize("device", DEVICES)
def test_unit_kernels_of_the_moe_are_the_gated_closed_form(device):
    """Autograd K_e of s_i = u_iᵀ z(x_i), z the gated mixture: K_e = D_g K_e^expert D_g, D_g = diag(g_e(x_i))."""
    cfg = {"model": {"experts": 3, "hiddenUnits": 5}}
    torch.manual_seed(0)
    model = MoeMlp(7, 4, cfg, torch.Generator().manual_seed(3)).to(device)
    with torch.no_grad():
        model.gate_w.mul_(100)  # a decisive gate: the gate weights matter
    x = torch.randn(6, 7, generator=torch.Generator().manual_seed(4)).to(device)
    u = torch.randn(6, 4, generator=torch.Generator().manual_seed(5)).to(device)
    s = (u * model(x)).sum(1)
    kernels = estimators.unit_kernels(s, [model.unit_params(e) for e in range(3)], False).double().cpu().numpy()
    g = model.gate(x, frozenset()).detach().double().cpu().numpy()
    x64, u64 = x.double().cpu().numpy(), u.double().cpu().numpy()
    for e in range(3):
        p = [t.detach().double().cpu().numpy() for t in model.unit_params(e)]
        expected = two_layer_kernel(x64, u64 * g[:, e:e + 1], p[0], p[1], p[2])
        np.testing.assert_allclose(kernels[e], expected, rtol=2e-5, atol=2e-6 * np.abs(expected).max())


@pytest.mark.parametrize("device", DEVICES)
def test_the_moe_closed_form_kernels_equal_the_autograd_jacobians_and_their_gradients(device):
    """MoeMlp.unit_kernels (what the engine uses) against J_e J_eᵀ by autograd, values and the gradient
    of a function of them (the regularizer differentiates through it), in float64."""
    model = MoeMlp(6, 3, {"model": {"experts": 3, "hiddenUnits": 4}}, torch.Generator().manual_seed(11)).double().to(device)
    x = torch.randn(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(12)).to(device)
    u = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(13)).to(device)
    for pruned in (frozenset(), frozenset({1})):
        closed = model.unit_kernels(x, u, pruned)
        s = (u * model(x, pruned)).sum(1)
        auto = estimators.unit_kernels(s, [model.unit_params(e) for e in range(3)], True)
        np.testing.assert_allclose(closed.detach().cpu().numpy(), auto.detach().cpu().numpy(), rtol=1e-10, atol=1e-12)
        w = torch.randn(3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(14)).to(device)
        params = list(model.parameters())
        g_closed = torch.autograd.grad((closed * w).sum(), params, allow_unused=True)
        g_auto = torch.autograd.grad((auto * w).sum(), params, allow_unused=True)
        for a, b in zip(g_closed, g_auto):
            if a is None or b is None:
                assert (a is None or not a.abs().max()) and (b is None or not b.abs().max())
                continue
            np.testing.assert_allclose(a.cpu().numpy(), b.cpu().numpy(), rtol=1e-9, atol=1e-11)


def test_linear_unit_kernel_is_the_gram_matrix():
    """A linear unit F = X·w has J = X, so K = X·Xᵀ exactly."""
    x = torch.randn(5, 3, dtype=torch.float64)
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    k = estimators.unit_kernels(x @ w, [[w]], False)[0]
    np.testing.assert_allclose(k.numpy(), (x @ x.T).numpy(), rtol=1e-12)


def test_pruned_unit_has_a_zero_kernel_and_kappa_at_the_floor():
    model = MoeMlp(4, 3, {"model": {"experts": 2, "hiddenUnits": 3}}, torch.Generator().manual_seed(1))
    x = torch.randn(4, 4)
    s = (torch.randn(4, 3) * model(x, frozenset({1}))).sum(1)
    k = estimators.unit_kernels(s, [model.unit_params(e) for e in range(2)], False)
    assert float(k[1].abs().max()) == 0.0
    assert estimators.conditioning(k[1].numpy(), 1e-6)["kappa"] == 1e6


def test_surrogate_equals_kappa_and_its_gradient_is_hellmann_feynman():
    """κ̃ with the eigenvectors held equals κ, and its gradient matches central differences of κ."""
    torch.manual_seed(2)
    a = torch.randn(6, 9, dtype=torch.float64, requires_grad=True)

    def kernel(m):
        return (m @ m.T).unsqueeze(0)

    c = estimators.conditioning(kernel(a).detach()[0].numpy(), 1e-6)
    kt = estimators.kappa_surrogates(kernel(a), [c["vMin"]], [c["vMax"]], 1e-6)[0]
    assert float(kt) == pytest.approx(c["kappa"], rel=1e-10)
    kt.backward()
    h = 1e-6
    for idx in [(0, 0), (2, 5), (5, 8)]:
        plus, minus = a.detach().clone(), a.detach().clone()
        plus[idx] += h
        minus[idx] -= h
        fd = (estimators.conditioning(kernel(plus)[0].numpy(), 1e-6)["kappa"] - estimators.conditioning(kernel(minus)[0].numpy(), 1e-6)["kappa"]) / (2 * h)
        assert float(a.grad[idx]) == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_surrogate_of_a_zero_kernel_is_zero_not_nan():
    k = torch.zeros(1, 3, 3)
    v = np.eye(3)[0]
    assert float(estimators.kappa_surrogates(k, [v], [v], 1e-6)[0]) == 0.0


def test_differentiable_directions_equal_the_float64_ones_and_survive_confident_rows():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0], [200.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    y = torch.eye(3, dtype=torch.float64)[[0, 2, 0]]
    u = estimators.output_directions_torch(logits, y)
    want = estimators.output_directions(torch.log_softmax(logits, 1).detach().numpy(), y.numpy())
    np.testing.assert_allclose(u.detach().numpy(), want, rtol=1e-12, atol=1e-15)
    # Differentiable: the gradient of a function of u through the logits is finite and matches differences.
    (g,) = torch.autograd.grad((u * torch.tensor([[1.0, -2.0, 0.5]] * 3, dtype=torch.float64)).sum(), logits)
    assert torch.isfinite(g).all()
    h = 1e-6
    base = logits.detach().clone()
    for idx in [(0, 1), (1, 2)]:
        plus, minus = base.clone(), base.clone()
        plus[idx] += h
        minus[idx] -= h
        f = lambda z: float((estimators.output_directions_torch(z, y) * torch.tensor([[1.0, -2.0, 0.5]] * 3, dtype=torch.float64)).sum())
        assert float(g[idx]) == pytest.approx((f(plus) - f(minus)) / (2 * h), rel=1e-5, abs=1e-9)


def test_conditioning_served_is_conditioning_of_each_kernel_whatever_the_sizes():
    """The batched eigvalsh a measurement runs (one call for every kernel, each on its rows) against one
    conditioning() per kernel, including a singular (rank-one), a zero and an asymmetric kernel, and
    kernels of sizes 2 and 1 solved as principal submatrices of a 4×4 stack entry; a NaN on a kernel's
    rows is refused, and so are kernels that are not square or a damping outside (0, 1]."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=(4, 4))
    v = rng.normal(size=4)
    kernels = [a @ a.T, np.outer(v, v), np.zeros((4, 4)), rng.normal(size=(2, 2)) + 3 * np.eye(2), a @ a.T + 1e-7 * a, np.ones((1, 1))]
    stack = np.zeros((len(kernels), 4, 4))
    rows = []
    for i, k in enumerate(kernels):
        m = k.shape[0]
        stack[i] = rng.normal(size=(4, 4))  # entries off the kernel's rows: never read
        stack[i][:m, :m] = k
        rows.append(list(range(m)))
    served = estimators.conditioning_served(stack, rows, 1e-6)
    assert len(served) == len(kernels)
    for k, got in zip(kernels, served):
        one = estimators.conditioning(k, 1e-6)
        assert set(got) == {"mu", "lf", "kappa"}
        for key in ("mu", "lf", "kappa"):
            assert got[key] == pytest.approx(one[key], rel=1e-12, abs=1e-12)
    assert served[1]["kappa"] == 1e6 and (served[2]["mu"], served[2]["lf"], served[2]["kappa"]) == (0.0, 0.0, 1e6)
    with pytest.raises(ValueError):
        estimators.conditioning_served(np.stack([np.eye(2), np.array([[1.0, math.nan], [math.nan, 1.0]])]), [[0, 1], [0, 1]], 1e-6)
    with pytest.raises(ValueError):
        estimators.conditioning_served(np.ones((1, 2, 3)), [[0]], 1e-6)
    with pytest.raises(ValueError):
        estimators.conditioning_served(stack, rows, 0.0)


@pytest.mark.parametrize("device", DEVICES)
def test_the_moe_probe_pass_is_the_forward_and_its_kernels_the_per_expert_ones(device):
    """MoeMlp.probe_pass (every expert in one batch) against forward() and against the per-expert closed
    form written out in float64, with a pruned expert, a soft mask and every expert pruned; served
    compares p_e(x_i) with 1/(2E) in float64."""
    model = MoeMlp(6, 3, {"model": {"experts": 3, "hiddenUnits": 4}}, torch.Generator().manual_seed(21)).double().to(device)
    x = torch.randn(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(22)).to(device)
    u = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(23)).to(device)
    mask = torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64, device=device)
    for pruned, m in ((frozenset(), None), (frozenset({1}), None), (frozenset(), mask), (frozenset({0, 1, 2}), None)):
        logits, parts = model.probe_pass(x, pruned, m)
        np.testing.assert_allclose(logits.detach().cpu().numpy(), model(x, pruned, m).detach().cpu().numpy(), rtol=1e-12, atol=1e-14)
        kernels = model.unit_kernels(x, u, pruned, m, parts).detach().cpu().numpy()
        g = model.gate(x, pruned, m).detach().cpu().numpy()
        xs, us = x.cpu().numpy(), u.cpu().numpy()
        for e in range(3):
            w1, b1, w2 = (p.detach().cpu().numpy() for p in (model.w1[e], model.b1[e], model.w2[e]))
            ue = us * g[:, e:e + 1]
            pre = xs @ w1 + b1
            hid, back = np.maximum(pre, 0), (pre > 0) * (ue @ w2.T)
            uu = ue @ ue.T
            expected = (hid @ hid.T) * uu + uu + (xs @ xs.T + 1) * (back @ back.T)
            np.testing.assert_allclose(kernels[e], expected, rtol=1e-12, atol=1e-14)
        served = model.served(x, pruned, m, parts)
        assert served == [[] if e in pruned else [i for i in range(5) if g[i, e] >= 1 / 6] for e in range(3)]
        assert served == model.served(x, pruned, m)

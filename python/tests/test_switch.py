"""The switch-transformer family against float64 closed forms and autograd: top-1 dispatch, the
load-balancing loss, the routed expert kernels, the regularizer's Hellmann–Feynman gradient, a pruned
expert, probe tokens and the text windows."""
import math

import numpy as np
import pytest
import torch

from finite_difference import directional_derivative
from pltrain import estimators
from pltrain.config import resolve
from pltrain.data import spreading_stride, text_dataset
from pltrain.models import SwitchTransformer
from pltrain.train import SwitchMeasurer, choose_probe_tokens

V = 7


def build(layers=3, experts=3, seed=1):
    config = resolve({"engine": "pytorch", "model": {"family": "switch-transformer", "experts": experts, "dModel": 8, "layers": layers, "contextLength": 6, "hiddenUnits": 5}, "data": {"source": "text"}})
    model = SwitchTransformer(V, config, torch.Generator().manual_seed(seed)).double()
    # A router start far from uniform, so routing differs between tokens.
    with torch.no_grad():
        for l in model.switch_blocks:
            model.blocks[l].router_w.mul_(30)
    return model


def tokens(b=4, t=6, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (b, t), generator=g), torch.randint(0, V, (b, t), generator=g)


def test_switch_blocks_count_back_from_the_last():
    assert build(layers=3).switch_blocks == [0, 2]
    assert build(layers=2).switch_blocks == [1]


def test_top1_dispatch_and_the_load_balancing_loss_in_closed_form():
    model = build()
    x, _ = tokens()
    trace = []
    _, aux, routed = model.forward_with_load(x, frozenset(), None, trace)
    E, N = model.units, x.numel()
    expected_aux = 0.0
    for layer in trace:
        f, probs, out = layer["input"].detach(), layer["probs"].detach(), layer["output"].detach()
        top = probs.argmax(dim=1)
        for i in range(N):
            ex = model.expert(layer["block"], int(top[i]))
            o = torch.relu(f[i] @ ex.w1 + ex.b1) @ ex.w2 + ex.b2
            torch.testing.assert_close(out[i], probs[i, top[i]] * o, rtol=1e-12, atol=1e-12)
        fractions = np.bincount(top.numpy(), minlength=E) / N
        expected_aux += E * float((probs.mean(dim=0).numpy() * fractions).sum())
    assert float(aux) == pytest.approx(expected_aux, rel=1e-12)
    assert sum(routed) == N * len(model.switch_blocks)
    assert sum(model.routed_shares(routed)) == pytest.approx(1.0)


def test_a_calls_load_is_its_own_whatever_runs_after_it():
    """The loop reads the step's load-balancing loss and tokens per expert after the probe's pass may have
    run the model again (κ in the step): each call returns its own, so the step's figures stay the step's."""
    model = build()
    x, _ = tokens()
    trace = []
    _, aux, routed = model.forward_with_load(x, frozenset(), None, trace)
    expected = sum(np.bincount(t["expert_of"].numpy(), minlength=model.units) for t in trace).tolist()
    other, _ = tokens(b=2, seed=9)
    _, other_aux, other_routed = model.forward_with_load(other, frozenset({0}), None)  # a probe-like pass
    assert routed == expected and sum(other_routed) == other.numel() * len(model.switch_blocks) != sum(routed)
    assert other_routed[0] == 0 and float(other_aux) != float(aux)
    assert not hasattr(model, "routed") and not hasattr(model, "aux")  # nothing kept on the model


def test_a_pruned_expert_gets_no_token_and_no_gradient():
    model = build()
    x, y = tokens()
    trace = []
    logits, _, routed = model.forward_with_load(x, frozenset({1}), None, trace)
    assert routed[1] == 0 and all(int((t["expert_of"] == 1).sum()) == 0 for t in trace)
    torch.nn.functional.cross_entropy(logits, y.reshape(-1)).backward()
    assert all(p.grad is None or float(p.grad.abs().max()) == 0 for p in model.unit_params(1))
    assert any(p.grad is not None and float(p.grad.abs().max()) > 0 for p in model.unit_params(0) + model.unit_params(2))


def probe_measurer(model, n=10, damping=1e-3):
    x, y = tokens(b=4)
    return SwitchMeasurer(model, x, y, damping, n)


def test_routed_expert_kernels_equal_per_sample_gradients():
    """K_e = Σ_s (r_s r_sᵀ) ⊙ K^alone_{e,s} equals J·Jᵀ, J[i] = ∂/∂θ_e Σ_s r_s,i·u_s,iᵀ·expert_e^s(x_s,i)."""
    model = build()
    m = probe_measurer(model)
    layers, served = m.probe_quantities(frozenset())
    units, rest, _ = m.kernels_from(layers, served, frozenset(), False)
    assert float(rest.abs().max()) == 0
    n = len(m.tokens)
    for e in range(model.units):
        rows = []
        for i in range(n):
            s = sum(routing[i, e] * (u[i] * model.expert(block, e)(x[i:i + 1])[0]).sum() for block, x, u, routing in layers)
            grads = torch.autograd.grad(s, model.unit_params(e), allow_unused=True)
            rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, model.unit_params(e))]))
        j = torch.stack(rows)
        np.testing.assert_allclose(units[e].numpy(), (j @ j.T).detach().numpy(), rtol=1e-9, atol=1e-12)
        # Only the tokens routed to e have a row.
        routed = set(served[e])
        for i in range(n):
            if i not in routed:
                assert float(units[e][i].abs().max()) == 0


def test_u_is_the_direction_of_the_loss_gradient_at_the_switch_output():
    """u_i^s ∥ ∂(Σ CE)/∂(Switch output at token i): the scaled pulls change only each sequence's scale."""
    model = build()
    m = probe_measurer(model)
    layers, _ = m.probe_quantities(frozenset())
    trace = []
    logits = model(m.probe_x, frozenset(), None, trace)
    loss = torch.nn.functional.cross_entropy(logits, m.probe_y.reshape(-1), reduction="sum")
    grads = torch.autograd.grad(loss, [t["output"] for t in trace])
    tok = torch.tensor(m.tokens)
    for (_, _, u, _), g in zip(layers, grads):
        gi = g[tok]
        np.testing.assert_allclose(u.numpy(), (gi / gi.norm(dim=1, keepdim=True)).numpy(), rtol=1e-9, atol=1e-12)


def test_regularizer_gradient_matches_finite_differences_with_the_probe_quantities_held():
    model = build()
    m = probe_measurer(model, n=12)
    layers, served = m.probe_quantities(frozenset())
    # Every expert trainable: every probe token has a row in some K_e, so K is nonsingular (a token
    # routed only to a frozen expert would leave K singular and κ at its floor 1/δ, flat).
    trainable = [0, 1, 2]
    units, rest, sv = m.kernels_from(layers, served, frozenset(), True)
    _, kernel, v_min, v_max = m.condition(units, rest, sv, set(), frozenset(), trainable)
    reg = m.regularizer(kernel, v_min, v_max)
    assert float(reg) == pytest.approx(m.model_kappa, rel=1e-9)
    assert m.model_kappa < 0.5 / 1e-3
    params = [p for e in trainable for p in model.unit_params(e)]
    gen = torch.Generator().manual_seed(5)
    direction = [torch.randn(p.shape, dtype=p.dtype, generator=gen) for p in params]
    grads = torch.autograd.grad(reg, params, allow_unused=True)  # b2's kernel part U·Uᵀ is constant
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, direction) if g is not None)

    def kappa():
        k = m.kernels_from(layers, served, frozenset(), False)[0]
        return estimators.conditioning(k[trainable].sum(dim=0).numpy(), 1e-3)["kappa"]

    numeric = directional_derivative(params, direction, kappa)
    assert abs(analytic) > 1e-6 * m.model_kappa  # not a flat point
    assert analytic == pytest.approx(numeric, rel=1e-5)


def test_measured_units_served_null_below_four_and_pruned():
    model = build()
    m = probe_measurer(model, n=12)
    stats = m.measure(set(), frozenset({2}), [0, 1])
    assert stats[2]["served"] == 0 and stats[2]["kappa"] is None and stats[2]["pruned"]
    assert sum(s["served"] for s in stats) >= 12  # every token is served in some Switch layer
    for s in stats:
        assert (s["kappa"] is None) == (s["served"] < estimators.MIN_SERVED)


def test_probe_tokens_spread_and_prefer_new_pairs():
    x = np.array([[1, 1, 1, 1], [1, 1, 1, 1]])
    y = np.array([[2, 2, 2, 3], [2, 2, 2, 2]])
    chosen = choose_probe_tokens(x, y, 3, 5)
    assert len(chosen) == 3 and len(set(chosen)) == 3
    pairs = [(int(x.reshape(-1)[c]), int(y.reshape(-1)[c])) for c in chosen]
    assert len(set(pairs[:2])) == 2  # the only two distinct pairs come first
    assert spreading_stride(10) == 7 and math.gcd(spreading_stride(97), 97) == 1


def test_text_windows_shift_by_one_and_cap_the_vocabulary():
    text = "abcdefghij" * 30
    ds = text_dataset(text, "t", 4)
    assert ds.classes == 10 and ds.kind == "text"
    np.testing.assert_array_equal(ds.train_y[:, :-1], ds.train_x[:, 1:])
    assert len({tuple(r) for r in ds.train_x}) <= ds.train_x.shape[0]
    wide = "".join(chr(0x100 + i) * (1 + i % 3) for i in range(300))
    capped = text_dataset(wide * 2, "w", 4)
    assert capped.classes == 256 and capped.vocabulary[-1] == "\ufffd"
    with pytest.raises(ValueError, match="needs at least 10"):
        text_dataset("abc", "short", 4)


def test_model_kappa_is_taken_over_the_tokens_a_trainable_expert_serves():
    """A frozen expert that alone serves some probe tokens leaves zero rows in Σ_{e∈T} K_e; the model's κ
    is that kernel's principal submatrix on the other rows (switchTransformer.ts does the same), not the
    cap 1/δ of the singular whole."""
    model = build(layers=1, experts=3)
    m = probe_measurer(model, n=12)
    stats_all = m.measure(set(), frozenset(), [0, 1, 2])
    busy = max(range(3), key=lambda e: stats_all[e]["served"])
    trainable = [e for e in range(3) if e != busy]
    units, rest, served = m.kernels(frozenset(), False)
    stats, kernel, v_min, v_max = m.condition(units, rest, served, {busy}, frozenset(), trainable)
    k = kernel.detach().double().numpy()
    rows = [i for i in range(k.shape[0]) if k[i, i] > 0]
    assert stats[busy]["served"] > 0 and len(rows) < k.shape[0], (stats[busy]["served"], rows)
    whole = estimators.conditioning(k, m.damping)["kappa"]
    sub = estimators.conditioning(k[np.ix_(rows, rows)], m.damping)["kappa"]
    assert whole >= 0.5 / m.damping, whole
    assert m.model_kappa == pytest.approx(sub, rel=1e-12) and sub < 0.5 / m.damping
    # The embedded eigenvectors give the submatrix's extreme eigenvalues as Rayleigh quotients on the whole.
    outside = [i for i in range(k.shape[0]) if i not in rows]
    assert np.all(v_min[outside] == 0) and np.all(v_max[outside] == 0)
    lam = np.linalg.eigvalsh(k[np.ix_(rows, rows)])
    assert float(v_min @ k @ v_min) == pytest.approx(lam[0], rel=1e-9, abs=1e-12)
    assert float(v_max @ k @ v_max) == pytest.approx(lam[-1], rel=1e-9)


def test_scaled_pulls_torch_equal_the_float64_pulls_and_their_derivative():
    """scaled_logit_gradients_torch: the float64 value, and ⟨w, ∂pulls/∂z·d⟩ equal to central differences
    of the float64 function of z, with a row at the e^−20 floor in one group."""
    gen = torch.Generator().manual_seed(3)
    n, c, group = 6, 5, 3
    z = torch.randn(n, c, dtype=torch.float64, generator=gen)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    z[4, 4] = 40.0  # an almost perfect prediction: its pull is below e^−20 of its group's strongest
    y = np.eye(c)[labels.numpy()]
    reference = lambda t: estimators.scaled_logit_gradients(torch.log_softmax(t, dim=1).numpy(), y, group)  # noqa: E731
    zz = z.clone().requires_grad_(True)
    pulls = estimators.scaled_logit_gradients_torch(torch.log_softmax(zz, dim=1), y, group)
    np.testing.assert_array_equal(pulls.detach().numpy(), reference(z))
    log_size = np.log(np.linalg.norm(reference(z), axis=1))
    assert log_size[4] - log_size[3:].max() == pytest.approx(-20, abs=1e-9)  # at the floor
    w = torch.randn(n, c, dtype=torch.float64, generator=gen)
    d = torch.randn(n, c, dtype=torch.float64, generator=gen)
    (grad,) = torch.autograd.grad((pulls * w).sum(), zz)
    analytic = float((grad * d).sum())
    eps = 1e-6
    numeric = float((w.numpy() * (reference(z + eps * d) - reference(z - eps * d))).sum() / (2 * eps))
    assert abs(analytic) > 1e-3
    assert analytic == pytest.approx(numeric, rel=1e-6)
    # The derivative matters: holding the pulls (a constant) would give 0.
    with pytest.raises(ValueError, match="one-hot"):
        estimators.scaled_logit_gradients_torch(torch.log_softmax(zz, dim=1), y * 0.5, group)


@pytest.mark.parametrize("frozen,pruned", [(set(), frozenset()), ({1}, frozenset()), (set(), frozenset({2}))])
def test_regularizer_gradient_follows_x_u_and_routing_into_every_weight(frozen, pruned):
    """The step's κ̃ (kernels made in its graph) against central differences of the measured κ, along a
    random direction over ALL parameters (embeddings, attention, layer norms, routers, experts), the
    probe quantities recomputed at each point; the top-1 choices are the same at both points. Holding
    x, u and the routing (the old regularizer) misses most of it."""
    model = build(layers=2)
    m = probe_measurer(model, n=12)
    trainable = [e for e in range(model.units) if e not in frozen and e not in pruned]
    units, rest, served = m.kernels(pruned, True)
    _, kernel, v_min, v_max = m.condition(units, rest, served, frozen, pruned, trainable)
    reg = m.regularizer(kernel, v_min, v_max)
    assert float(reg) == pytest.approx(m.model_kappa, rel=1e-9)
    params = list(model.parameters())
    grads = torch.autograd.grad(reg, params, allow_unused=True)
    gen = torch.Generator().manual_seed(7)
    direction = [torch.randn(p.shape, dtype=p.dtype, generator=gen) for p in params]
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, direction) if g is not None)
    shared = sum(float((g * d).sum()) for g, d, p in zip(grads, direction, params) if g is not None and all(p is not q for e in range(model.units) for q in model.unit_params(e)))
    routes = []

    def kappa():
        layers, _ = m.probe_quantities(pruned)
        routes.append([r.argmax(dim=1).tolist() for _, _, _, r in layers])
        m.condition(*m.kernels(pruned, False), frozen, pruned, trainable)
        return m.model_kappa

    numeric = directional_derivative(params, direction, kappa, eps=1e-6)
    assert routes[0] == routes[1], "a routing switch was crossed"
    assert abs(numeric) > 1e-6 * m.model_kappa
    assert analytic == pytest.approx(numeric, rel=1e-5)
    # The shared weights carry a real part of it (what holding x, u and p_top dropped).
    assert abs(shared) > 0.05 * abs(numeric), (shared, numeric)

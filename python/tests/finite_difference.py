"""Central differences along a direction in parameter space, for checking autograd gradients."""
import torch


def directional_derivative(params, direction, f, eps=1e-6):
    """(f(w + eps·d) − f(w − eps·d)) / (2·eps), evaluated in place on `params`, which are restored after."""
    def shift(scale):
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(scale * d)

    shift(eps)
    plus = f()
    shift(-2 * eps)
    minus = f()
    shift(eps)
    return (plus - minus) / (2 * eps)

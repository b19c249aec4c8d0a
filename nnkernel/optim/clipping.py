"""Gradient clipping by the global norm, as torch.nn.utils.clip_grad_norm_."""

from __future__ import annotations

from ..backend import kernels_for_array, namespace_of


def global_norm(grads: dict, members: bool = False):
    """√(Σ g²) over all gradients (per member when ``members``), a backend array."""
    gs = list(grads.values())
    k = kernels_for_array(gs[0])
    total = k.sum_of_squares(gs[0], members)
    for g in gs[1:]:
        total = total + k.sum_of_squares(g, members)
    return namespace_of(gs[0]).sqrt(total)


def clip_scale(xp, norm, max_norm: float):
    """min(1, max_norm / (‖g‖ + 1e-6)): the factor torch's clip_grad_norm_ multiplies by.

    A minimum, not ``xp.clip``: array-api-compat's clip indexes with a boolean mask,
    which on a GPU reads a count back to the host.
    """
    return xp.minimum(max_norm / (norm + 1e-6), 1.0)


def clip_by_global_norm(grads: dict, max_norm: float, members: bool = False) -> dict:
    """The gradients scaled by min(1, max_norm / (‖g‖ + 1e-6)), as new arrays."""
    xp = namespace_of(next(iter(grads.values())))
    scale = clip_scale(xp, global_norm(grads, members), max_norm)
    out = {}
    for k, g in grads.items():
        s = xp.reshape(scale, (-1,) + (1,) * (g.ndim - 1)) if members else scale
        out[k] = g * s
    return out

"""Activation functions g and their backward step dz = da ⊙ g′(z).

Each activation is a tiny stateless object with two formulas:

    forward(xp, z)            -> a = g(z)
    backward(xp, z, a, da)    -> dz = da ⊙ g′(z)

`backward` receives both z and a, so a derivative is taken from whichever is
cheaper (sigmoid′ = a(1 − a), tanh′ = 1 − a², relu′ = [a > 0]), as in
scikit-learn's tables. Softmax's Jacobian is not diagonal, so its backward is
the Jacobian-vector product a ⊙ (da − Σ da ⊙ a).

Only Array API functions are used, with Python floats for constants so a
float32 array stays float32. Piecewise derivatives multiply by a 0/1 mask
rather than call ``xp.where``: on NumPy the select is an order of magnitude
slower (bench/history/2026-11-22-intel-sweeps.md), and ReLU's backward runs in every step of every
network.
"""

from __future__ import annotations

import math

from ..errors import ConfigError


class Activation:
    name = "activation"
    needs_z = True  # whether backward reads z (else z may be dropped after forward)

    def forward(self, xp, z):
        raise NotImplementedError

    def backward(self, xp, z, a, da):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}()"


class Identity(Activation):
    name = "identity"
    needs_z = False

    def forward(self, xp, z):
        return z

    def backward(self, xp, z, a, da):
        return da


class Sigmoid(Activation):
    name = "sigmoid"
    needs_z = False

    def forward(self, xp, z):
        return sigmoid(xp, z)

    def backward(self, xp, z, a, da):
        return da * a * (1.0 - a)


class Tanh(Activation):
    name = "tanh"
    needs_z = False

    def forward(self, xp, z):
        return xp.tanh(z)

    def backward(self, xp, z, a, da):
        return da * (1.0 - a * a)


def sigmoid(xp, z):
    """σ(z) = 1/(1 + e^−z) in its tanh form, ½(tanh(z/2) + 1): no overflow for z ≪ 0."""
    return 0.5 * (xp.tanh(0.5 * z) + 1.0)


def softmax(xp, z, axis: int = -1):
    """e^z / Σ e^z along ``axis``, with the maximum subtracted first (stable for any z)."""
    e = xp.exp(z - xp.max(z, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


def _step(xp, x):
    """The 0/1 mask [x > 0] in x's dtype."""
    return xp.astype(x > 0.0, x.dtype)


class ReLU(Activation):
    name = "relu"
    needs_z = False

    def forward(self, xp, z):
        return xp.maximum(z, 0.0)

    def backward(self, xp, z, a, da):
        return da * _step(xp, a)  # relu′ = [a > 0]


class LeakyReLU(Activation):
    name = "leaky_relu"
    needs_z = True

    def __init__(self, alpha: float = 0.01):
        self.alpha = float(alpha)

    def forward(self, xp, z):
        # max(z, αz) for α ≤ 1 (the usual leak), min(z, αz) for α > 1
        return xp.maximum(z, self.alpha * z) if self.alpha <= 1.0 else xp.minimum(z, self.alpha * z)

    def backward(self, xp, z, a, da):
        return da * (self.alpha + (1.0 - self.alpha) * _step(xp, z))  # g′ = 1 or α

    def __repr__(self):
        return f"LeakyReLU(alpha={self.alpha})"


class ELU(Activation):
    name = "elu"
    needs_z = True

    def __init__(self, alpha: float = 1.0):
        self.alpha = float(alpha)

    def forward(self, xp, z):
        return xp.maximum(z, 0.0) + self.alpha * xp.expm1(xp.minimum(z, 0.0))

    def backward(self, xp, z, a, da):
        m = _step(xp, z)
        return da * (m + (1.0 - m) * (a + self.alpha))  # g′ = 1 for z > 0, g + α below

    def __repr__(self):
        return f"ELU(alpha={self.alpha})"


class Swish(Activation):
    """x·σ(x), also called SiLU."""

    name = "swish"

    def forward(self, xp, z):
        return z * sigmoid(xp, z)

    def backward(self, xp, z, a, da):
        s = sigmoid(xp, z)
        return da * (s + a * (1.0 - s))  # g′ = σ + zσ(1 − σ) = σ + g(1 − σ)


SiLU = Swish

_GELU_C = math.sqrt(2.0 / math.pi)


class GELU(Activation):
    """The tanh approximation, as torch's ``gelu(approximate="tanh")``.

    The standard has no erf, and the tanh form is what most models use.
    """

    name = "gelu"

    def forward(self, xp, z):
        return 0.5 * z * (1.0 + xp.tanh(_GELU_C * (z + 0.044715 * z * z * z)))

    def backward(self, xp, z, a, da):
        z2 = z * z
        t = xp.tanh(_GELU_C * (z + 0.044715 * z2 * z))
        dt = (1.0 - t * t) * (_GELU_C * (1.0 + 3.0 * 0.044715 * z2))
        return da * (0.5 * (1.0 + t) + 0.5 * z * dt)


class Softmax(Activation):
    """Softmax over the last axis, stable (the row maximum is subtracted first)."""

    name = "softmax"
    needs_z = False

    def forward(self, xp, z):
        return softmax(xp, z)

    def backward(self, xp, z, a, da):
        return a * (da - xp.sum(da * a, axis=-1, keepdims=True))


ACTIVATIONS = {cls.name: cls for cls in
               (Identity, Sigmoid, Tanh, ReLU, LeakyReLU, ELU, Swish, GELU, Softmax)}
ACTIVATIONS["silu"] = Swish
ACTIVATIONS["linear"] = Identity
ACTIVATIONS[None] = Identity  # type: ignore[index]


def get_activation(spec) -> Activation:
    """An Activation from a name ("relu"), a class, an instance or None (identity)."""
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, type) and issubclass(spec, Activation):
        return spec()
    key = spec.lower().replace("-", "_") if isinstance(spec, str) else spec
    if key not in ACTIVATIONS:
        valid = ", ".join(sorted(k for k in ACTIVATIONS if k))
        raise ConfigError(f"unknown activation {spec!r}; valid activations: {valid}")
    return ACTIVATIONS[key]()

"""The optimizers, with torch.optim's update rules and defaults.

    opt = Adam(lr=1e-3)
    opt.step(model.params, model.grads)

`step` updates exactly the entries named in ``grads`` (leave a key out and that
parameter stays frozen); the shared machinery is in `base.py`. Each optimizer here
names its state and writes its `update` through the kernels (`k.sgd`, `k.adam`,
`k.rmsprop`, in ``nnkernel/kernels/<library>/optim.py``): the reference formulas
and each library's twin.
"""

from __future__ import annotations

import math

from ..checks import in_range
from ..errors import ConfigError
from .base import Optimizer


class SGD(Optimizer):
    """p ← p − lr·g;  with momentum μ: b ← μb + (1 − dampening)g, then g ← b (Nesterov: g + μb)."""

    def __init__(self, lr=1e-2, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0,
                 **kw):
        super().__init__(lr, weight_decay=weight_decay, **kw)
        self.momentum = in_range("momentum", momentum, 0.0, math.inf, hi_open=True)
        self.nesterov = bool(nesterov)
        self.dampening = in_range("dampening", dampening, 0.0, 1.0)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ConfigError("Nesterov momentum needs momentum > 0 and dampening = 0")

    @property
    def state_names(self):
        return ("momentum_buffer",) if self.momentum else ()

    def update(self, k, p, g, state, lr, wd, step):
        p, buf = k.sgd(p, g, state.get("momentum_buffer"), lr, self.momentum, self.dampening,
                       self.nesterov, wd, step == 1)
        return p, ({"momentum_buffer": buf} if self.momentum else {})


class RMSprop(Optimizer):
    """v ← α v + (1 − α) g²;  p ← p − lr · g / (√v + ε)  (torch defaults: lr=0.01, α=0.99)."""

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, **kw):
        super().__init__(lr, weight_decay=weight_decay, **kw)
        self.alpha = in_range("alpha", alpha, 0.0, 1.0)
        self.eps = in_range("eps", eps, 0.0, math.inf, lo_open=True, hi_open=True)
        self.momentum = in_range("momentum", momentum, 0.0, math.inf, hi_open=True)
        self.centered = bool(centered)

    @property
    def state_names(self):
        return (("square_avg",) + (("grad_avg",) if self.centered else ())
                + (("momentum_buffer",) if self.momentum else ()))

    def update(self, k, p, g, state, lr, wd, step):
        p, v, gavg, buf = k.rmsprop(p, g, state["square_avg"], state.get("grad_avg"),
                                    state.get("momentum_buffer"), lr, self.alpha, self.eps, wd,
                                    self.momentum, self.centered)
        new = {"square_avg": v}
        if self.centered:
            new["grad_avg"] = gavg
        if self.momentum:
            new["momentum_buffer"] = buf
        return p, new


class Adam(Optimizer):
    """m ← β₁m + (1 − β₁)g,  v ← β₂v + (1 − β₂)g²,  p ← p − lr·m̂ / (√v̂ + ε)  (bias-corrected).

    ``flush_subnormals=True`` sets the subnormal entries of m to 0 every 16 steps: where
    gradients stay 0 (always-black pixels, dead units) m decays into the subnormal range,
    where x86 CPUs compute slowly. It changes m by less than float32's smallest normal
    number; off by default, so Adam matches torch.optim exactly.
    """

    decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 flush_subnormals=False, **kw):
        super().__init__(lr, weight_decay=weight_decay, **kw)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ConfigError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (in_range("betas[0]", betas[0], 0.0, 1.0, hi_open=True),
                      in_range("betas[1]", betas[1], 0.0, 1.0, hi_open=True))
        self.eps = in_range("eps", eps, 0.0, math.inf, lo_open=True, hi_open=True)
        self.flush_subnormals = bool(flush_subnormals)

    state_names = ("exp_avg", "exp_avg_sq")

    def update(self, k, p, g, state, lr, wd, step):
        p, m, v = k.adam(p, g, state["exp_avg"], state["exp_avg_sq"], lr, self.betas[0],
                         self.betas[1], self.eps, wd, self.decoupled, step, self.flush_subnormals)
        return p, {"exp_avg": m, "exp_avg_sq": v}


class AdamW(Adam):
    """Adam with decoupled weight decay: p ← p(1 − lr·λ) before the Adam step (default λ = 0.01)."""

    decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, **kw):
        super().__init__(lr, betas=betas, eps=eps, weight_decay=weight_decay, **kw)


OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}


def optimizer_class(name) -> type[Optimizer]:
    key = str(name).lower()
    if key not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[key]


def get_optimizer(spec, **kwargs) -> Optimizer:
    """An optimizer from an instance or a name ("adam", "sgd", ...) and keyword arguments."""
    if isinstance(spec, Optimizer):
        return spec
    return optimizer_class(spec)(**kwargs)

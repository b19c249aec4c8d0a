"""nnkernel on its JAX backend: the eager step (``jax``) and the compiled one (``jax-compiled``).

Both are nnkernel's public API as `nnkernel.fit` runs it: the eager step is
forward, fused loss, backward without dx and ``opt.step`` dispatched op by op;
the compiled step is `nnkernel.train.compiled.CompiledStep` (``fit(...,
compile=True)``), the same code traced once by jax.jit. Each runs in a worker
process of its own (XLA's thread pool would fight NumPy's BLAS threads).
"""

from __future__ import annotations

from .common import Step, step
from .nnkernel_side import nk_data, nk_optimizer, nk_train_step


def _model(case, ensemble=None, seed=0):
    from nnkernel.nn.builders import mlp

    sizes = case["sizes"]
    return mlp(sizes[0], sizes[1:-1], sizes[-1], activation=case.get("activation", "relu"),
               seed=seed, dtype=case.get("dtype", "float32"), backend="jax",
               device="gpu" if case.get("device", "cpu") == "gpu" else None, ensemble=ensemble)


def _step(case, ensemble=None):
    import nnkernel as nk

    if case.get("dtype") == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)
    model = _model(case, ensemble)
    opt = nk_optimizer(nk, case)
    data = nk_data(model, case)
    # waits for every live array on the device; reading model.params instead would make the
    # compiled step's deferred per-key views inside the timed region
    sync = model.backend.synchronize
    if case["impl"] == "jax-compiled":
        import functools

        if case.get("loss", "ce") == "ce":  # labels checked once, not in the traced step
            loss = functools.partial(nk.losses.cross_entropy, num_check=False)
        else:
            loss = nk.losses.mse
        from nnkernel.train.compiled import CompiledStep

        compiled = CompiledStep(model, loss, opt)
        return Step(lambda: compiled(data()), sync)
    train = nk_train_step(nk, model, opt, case)
    return Step(lambda: train(*data()), sync)


@step("mlp", "jax", "jax-compiled")
def _jax_mlp(case):
    return _step(case)


@step("ensemble", "jax", "jax-compiled")
def _jax_ensemble(case):
    return _step(case, ensemble=case["members"])


@step("matmul", "jax")
def _jax_matmul(case):
    import jax

    from .common import matmul_shapes, random_arrays

    jnp = jax.numpy
    a, b = (jnp.asarray(x) for x in random_arrays(case, *matmul_shapes(case)))
    out = {}

    def run():
        out["c"] = jnp.matmul(a, b)

    return Step(run, lambda: out["c"].block_until_ready() if "c" in out else None)

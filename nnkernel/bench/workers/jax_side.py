"""nnkernel on its JAX backend: the eager step (``jax``) and the compiled one (``jax-compiled``).

Both are nnkernel's public API as `nnkernel.fit` runs it: the eager step is
forward, fused loss, backward without dx and ``opt.step`` dispatched op by op;
the compiled step is `nnkernel.train.compiled.CompiledStep` (``fit(...,
compile=True)``), the same code traced once by jax.jit. Each runs in a worker
process of its own (XLA's thread pool would fight NumPy's BLAS threads).
"""

from __future__ import annotations

from .common import Step, cycle, inputs


def _model(case, ensemble=None, seed=0):
    from nnkernel.nn.builders import mlp

    sizes = case["sizes"]
    return mlp(sizes[0], sizes[1:-1], sizes[-1], activation=case.get("activation", "relu"),
               seed=seed, dtype=case.get("dtype", "float32"), backend="jax",
               device="gpu" if case.get("device", "cpu") == "gpu" else None, ensemble=ensemble)


def _optimizer(nk, case):
    if case.get("optimizer", "adam") == "adam":
        return nk.optim.Adam(lr=case.get("lr", 1e-3))
    return nk.optim.SGD(lr=case.get("lr", 0.01))


def _loss(nk, case, members):
    if case.get("loss", "ce") == "ce":
        def loss(y, t, **kw):
            return nk.losses.cross_entropy(y, t, members=members, num_check=False)
    else:
        def loss(y, t, **kw):
            return nk.losses.mse(y, t, members=members)
    return loss


def _step(case, ensemble=None):
    import nnkernel as nk

    if case.get("dtype") == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)
    model = _model(case, ensemble)
    opt = _optimizer(nk, case)
    members = ensemble is not None
    be = model.backend
    xs, ts = inputs(case, case["sizes"][0])
    data = cycle([(be.asarray(x), be.asarray(t)) for x, t in zip(xs, ts, strict=True)])

    def sync():
        import jax

        jax.block_until_ready(dict(model.params))  # the newest parameters, in either layout

    if case["impl"] == "jax-compiled":
        if case.get("loss", "ce") == "ce":
            loss = nk.losses.cross_entropy  # the compiled step passes num_check=False itself
        else:
            loss = nk.losses.mse
        from nnkernel.train.compiled import CompiledStep

        compiled = CompiledStep(model, loss, opt)
        return Step(lambda: compiled(*data()), sync)
    loss = _loss(nk, case, members)

    def run():
        x, t = data()
        out = model.forward(x, train=True)
        _, dy = loss(out, t)
        model.backward(dy, input_grad=False)
        opt.step(model.params, model.grads)

    return Step(run, sync)


def _jax_mlp(case):
    return _step(case)


def _jax_ensemble(case):
    return _step(case, ensemble=case["members"])


def _jax_matmul(case):
    import jax

    from .common import matmul_shapes, random_arrays

    jnp = jax.numpy
    a, b = (jnp.asarray(x) for x in random_arrays(case, *matmul_shapes(case)))
    out = {}

    def run():
        out["c"] = jnp.matmul(a, b)

    return Step(run, lambda: out["c"].block_until_ready() if "c" in out else None)


STEPS = {"mlp": _jax_mlp, "ensemble": _jax_ensemble, "matmul": _jax_matmul}

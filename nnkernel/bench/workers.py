"""The timed side of `nnkernel bench`: one process per library, driven over a pipe.

    python -m nnkernel.bench.workers nnkernel|numpy|torch

Each library runs in its own process because PyTorch's OpenMP threads and
OpenBLAS's threads spin against each other when they share one. The parent
(`nnkernel.bench`) writes one JSON object per line on the worker's stdin and
reads one JSON line back:

    {"cmd": "info"}                                   -> versions, threads, BLAS
    {"cmd": "ceiling", "n": 2048, "dtype": "float32", "repeats": 5}
                                                      -> {"gflops": [...]} square matmul
    {"cmd": "setup", "id": "a", "case": {...}, "warmup_s": 0.1, "round_s": 0.2}
                                                      -> {"steps": steps per round}
    {"cmd": "round", "id": "a"}                       -> {"seconds": per step}
    {"cmd": "drop"}                                   -> forget every case
    {"cmd": "quit"}

A case names a workload ("kind": mlp, matmul, bmm, dense_fwd, dense_fwd_bwd,
softmax_ce, adam, ensemble) and an implementation ("impl"): "nnkernel" and
"nnkernel-loop" run through nnkernel's public API, "numpy-loop" is a plain
hand-written NumPy step (the library-overhead reference), "torch",
"torch-func" and "torch-loop" are PyTorch eager. `make_step(case)` builds the
step function; the pytest-benchmark suite in bench/ calls it in-process too, so
both measure the same code.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

import numpy as np

N_BATCHES = 4  # distinct input batches a step cycles through (no cache-hot single batch)
SIDES = {"nnkernel": "nnkernel", "nnkernel-loop": "nnkernel", "numpy-loop": "numpy",
         "torch": "torch", "torch-func": "torch", "torch-loop": "torch"}


class Step:
    """A timed unit of work: ``run()`` does one step, ``sync()`` waits for the device."""

    def __init__(self, run, sync=None):
        self.run = run
        self.sync = sync or (lambda: None)


def make_step(case: dict) -> Step:
    """The step function of one case (see the module docstring for the fields)."""
    impl = case["impl"]
    if impl in ("nnkernel", "nnkernel-loop"):
        return _NNKERNEL[case["kind"]](case)
    if impl == "numpy-loop":
        if case["kind"] != "mlp":
            raise ValueError("the hand-written NumPy reference exists for the 'mlp' kind only")
        return _numpy_mlp(case)
    if impl in ("torch", "torch-func", "torch-loop"):
        return _TORCH[case["kind"]](case)
    raise ValueError(f"unknown implementation {impl!r}; valid: {', '.join(SIDES)}")


# -- shared inputs: the same numbers on every side ---------------------------------------------
def _inputs(case, n_in, rows=None):
    """N_BATCHES float inputs (rows, n_in) and integer labels / float targets, as NumPy."""
    rng = np.random.default_rng(case.get("seed", 0))
    rows = case["batch"] if rows is None else rows
    dt = np.dtype(case.get("dtype", "float32"))
    xs = [rng.standard_normal((rows, n_in)).astype(dt) for _ in range(N_BATCHES)]
    n_out = case["sizes"][-1] if "sizes" in case else 10
    if case.get("loss", "ce") == "ce":
        ts = [rng.integers(0, n_out, rows) for _ in range(N_BATCHES)]
    else:
        ts = [rng.standard_normal((rows, n_out)).astype(dt) for _ in range(N_BATCHES)]
    return xs, ts


def _cycle(items):
    """A function returning items[0], items[1], ... round and round."""
    state = {"i": -1}
    n = len(items)

    def nxt():
        state["i"] = (state["i"] + 1) % n
        return items[state["i"]]

    return nxt


# -- nnkernel: the public API, as users run it --------------------------------------------------
def _nk_backend(case):
    return "cupy" if case.get("device", "cpu") == "gpu" else "numpy"


def _nk_mlp_model(nk, case, ensemble=None, seed=0):
    sizes, act = case["sizes"], case.get("activation", "relu")
    act_layer = {"relu": nk.ReLU, "tanh": nk.Tanh}[act]
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nk.Dense(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act_layer())
    return nk.Sequential(*layers, seed=seed, dtype=case.get("dtype", "float32"),
                         backend=_nk_backend(case), ensemble=ensemble)


def _nk_optimizer(nk, case):
    if case.get("optimizer", "adam") == "adam":
        return nk.optim.Adam(lr=case.get("lr", 1e-3))
    return nk.optim.SGD(lr=case.get("lr", 0.01))


def _nk_train_step(nk, model, opt, case):
    """One step of `nnkernel.fit`'s loop: forward, fused loss, backward without dx, update."""
    if case.get("loss", "ce") == "ce":
        def loss(y, t):  # fit passes num_check=False: labels are checked once, not per step
            return nk.losses.cross_entropy(y, t, members=model.ensemble is not None,
                                           num_check=False)
    else:
        def loss(y, t):
            return nk.losses.mse(y, t, members=model.ensemble is not None)

    def step(x, t):
        out = model.forward(x, train=True)
        _, dy = loss(out, t)
        model.backward(dy, input_grad=False)
        opt.step(model.params, model.grads)

    return step


def _nk_data(model, case, rows=None):
    xs, ts = _inputs(case, case["sizes"][0], rows)
    be = model.backend
    return _cycle([(be.asarray(x), be.asarray(t)) for x, t in zip(xs, ts, strict=True)])


def _nk_sync(case):
    import nnkernel as nk

    be = nk.Backend(_nk_backend(case))
    return be.synchronize


def _nk_mlp(case):
    import nnkernel as nk

    model = _nk_mlp_model(nk, case)
    step = _nk_train_step(nk, model, _nk_optimizer(nk, case), case)
    data = _nk_data(model, case)
    return Step(lambda: step(*data()), _nk_sync(case))


def _nk_ensemble(case):
    """E members as one stacked model (impl nnkernel) or as E separate models (nnkernel-loop)."""
    import nnkernel as nk

    E = case["members"]
    if case["impl"] == "nnkernel":
        model = _nk_mlp_model(nk, case, ensemble=E)
        step = _nk_train_step(nk, model, _nk_optimizer(nk, case), case)
        data = _nk_data(model, case)
        return Step(lambda: step(*data()), _nk_sync(case))
    models = [_nk_mlp_model(nk, case, seed=i) for i in range(E)]
    steps = [_nk_train_step(nk, m, _nk_optimizer(nk, case), case) for m in models]
    data = _nk_data(models[0], case)

    def run():
        x, t = data()
        for s in steps:
            s(x, t)

    return Step(run, _nk_sync(case))


def _nk_arrays(case, *shapes):
    import nnkernel as nk

    be = nk.Backend(_nk_backend(case))
    rng = np.random.default_rng(case.get("seed", 0))
    dt = np.dtype(case.get("dtype", "float32"))
    return be, [be.asarray(rng.standard_normal(s).astype(dt)) for s in shapes]


def _nk_matmul(case):
    be, (a, b) = _nk_arrays(case, *_matmul_shapes(case))
    matmul = be.xp.matmul
    return Step(lambda: matmul(a, b), be.synchronize)


def _nk_dense(case):
    import nnkernel as nk

    n_in, n_out = case["n_in"], case["n_out"]
    model = nk.Sequential(nk.Dense(n_in, n_out, activation="relu"),
                          dtype=case.get("dtype", "float32"), backend=_nk_backend(case))
    be, xs = _nk_arrays(case, *[(case["batch"], n_in)] * N_BATCHES)
    _, (dy,) = _nk_arrays(case, (case["batch"], n_out))
    data = _cycle(xs)
    if case["kind"] == "dense_fwd":
        return Step(lambda: model.forward(data(), train=True), be.synchronize)

    def run():
        model.forward(data(), train=True)
        model.backward(dy, input_grad=True)

    return Step(run, be.synchronize)


def _nk_softmax_ce(case):
    import nnkernel as nk

    be, logits = _nk_arrays(case, *[(case["batch"], case["classes"])] * N_BATCHES)
    rng = np.random.default_rng(1)
    labels = be.asarray(rng.integers(0, case["classes"], case["batch"]))
    data = _cycle(logits)
    return Step(lambda: nk.losses.cross_entropy(data(), labels, num_check=False),
                be.synchronize)


def _nk_adam(case):
    import nnkernel as nk

    model = _nk_mlp_model(nk, case)
    rng = np.random.default_rng(1)
    grads = {k: model.backend.asarray(rng.standard_normal(v.shape).astype(np.dtype(
        case.get("dtype", "float32")))) for k, v in model.params.items()}
    opt = nk.optim.Adam(lr=1e-3)
    return Step(lambda: opt.step(model.params, grads), model.backend.synchronize)


_NNKERNEL = {"mlp": _nk_mlp, "ensemble": _nk_ensemble, "matmul": _nk_matmul, "bmm": _nk_matmul,
             "dense_fwd": _nk_dense, "dense_fwd_bwd": _nk_dense, "softmax_ce": _nk_softmax_ce,
             "adam": _nk_adam}


def _matmul_shapes(case):
    if case["kind"] == "matmul":
        n = case["n"]
        return (n, n), (n, n)
    E, N, K, M = case["shape"]
    return (E, N, K), (E, K, M)


# -- the hand-written NumPy step: what a careful user writes without a library ------------------
class HandMLP:
    """forward, loss, backward and SGD/Adam written out with plain NumPy calls (CuPy on a GPU).

    The phases are methods so that bench/profile_step.py can time them one by one
    against nnkernel's; `step` is the whole thing.
    """

    def __init__(self, case, xp=np):
        self.xp = xp
        dt = np.dtype(case.get("dtype", "float32"))
        sizes = case["sizes"]
        rng = np.random.default_rng(0)
        self.Ws = [xp.asarray((rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(dt))
                   for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        self.bs = [xp.zeros(b, dtype=dt) for b in sizes[1:]]
        self.params = [p for pair in zip(self.Ws, self.bs, strict=True) for p in pair]
        self.ms = [xp.zeros_like(p) for p in self.params]
        self.vs = [xp.zeros_like(p) for p in self.params]
        self.relu = case.get("activation", "relu") == "relu"
        self.ce = case.get("loss", "ce") == "ce"
        self.adam = case.get("optimizer", "adam") == "adam"
        self.lr = case.get("lr", 1e-3 if self.adam else 0.01)
        self.t = 0

    def forward(self, x):
        xp, L = self.xp, len(self.Ws)
        acts = [x]
        a = x
        for i in range(L):
            z = a @ self.Ws[i]
            z += self.bs[i]
            if i < L - 1:
                a = xp.maximum(z, 0, out=z) if self.relu else xp.tanh(z, out=z)
            else:
                a = z
            acts.append(a)
        return acts

    def loss(self, y, t):
        """(loss, dL/dy): softmax cross-entropy on labels, or mean squared error."""
        xp = self.xp
        n = y.shape[0]
        if self.ce:
            shifted = y - y.max(axis=1, keepdims=True)
            e = xp.exp(shifted)
            s = e.sum(axis=1, keepdims=True)
            rows = xp.arange(n)
            loss = (xp.log(s[:, 0]) - shifted[rows, t]).mean()
            dz = e / s
            dz[rows, t] -= 1.0
            dz *= 1.0 / n
            return loss, dz
        diff = y - t
        return (diff * diff).mean(), diff * (2.0 / diff.size)

    def backward(self, acts, dz):
        """Gradients [dW0, db0, dW1, ...]; the first layer needs no dx."""
        grads = [None] * (2 * len(self.Ws))
        for i in range(len(self.Ws) - 1, -1, -1):
            grads[2 * i] = acts[i].T @ dz
            grads[2 * i + 1] = dz.sum(axis=0)
            if i > 0:
                da = dz @ self.Ws[i].T
                h = acts[i]
                dz = da * (h > 0) if self.relu else da * (1.0 - h * h)
        return grads

    def update(self, grads):
        lr, xp = self.lr, self.xp
        if not self.adam:
            for p, g in zip(self.params, grads, strict=True):
                p -= lr * g
            return
        b1, b2, eps = 0.9, 0.999, 1e-8
        self.t += 1
        step_size = lr / (1.0 - b1**self.t)
        root_bc2 = (1.0 - b2**self.t) ** 0.5
        for p, g, m, v in zip(self.params, grads, self.ms, self.vs, strict=True):
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            p -= step_size * m / (xp.sqrt(v) / root_bc2 + eps)

    def step(self, x, t):
        acts = self.forward(x)
        _, dz = self.loss(acts[-1], t)
        self.update(self.backward(acts, dz))


def _numpy_mlp(case):
    xp, sync = np, None
    if case.get("device", "cpu") == "gpu":
        import cupy as xp

        def sync():
            xp.cuda.get_current_stream().synchronize()

    hand = HandMLP(case, xp)
    xs, ts = _inputs(case, case["sizes"][0])
    data = _cycle([(xp.asarray(x), xp.asarray(t)) for x, t in zip(xs, ts, strict=True)])
    return Step(lambda: hand.step(*data()), sync)


# -- PyTorch eager, the way its tutorials write it ----------------------------------------------
def _torch_device(case):
    return "cuda" if case.get("device", "cpu") == "gpu" else "cpu"


def _torch_sync(torch, case):
    if _torch_device(case) == "cuda":
        return torch.cuda.synchronize
    return None


def _torch_tensors(torch, case, *arrays):
    return [torch.as_tensor(a).to(_torch_device(case)) for a in arrays]


def _torch_mlp_model(torch, case):
    nn = torch.nn
    sizes, act = case["sizes"], case.get("activation", "relu")
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU() if act == "relu" else nn.Tanh())
    dt = getattr(torch, case.get("dtype", "float32"))
    return nn.Sequential(*layers).to(device=_torch_device(case), dtype=dt)


def _torch_optimizer(torch, case, params):
    if case.get("optimizer", "adam") == "adam":
        return torch.optim.Adam(params, lr=case.get("lr", 1e-3))
    return torch.optim.SGD(params, lr=case.get("lr", 0.01))


def _torch_loss(torch, case):
    F = torch.nn.functional
    return F.cross_entropy if case.get("loss", "ce") == "ce" else F.mse_loss


def _torch_data(torch, case):
    xs, ts = _inputs(case, case["sizes"][0])
    xs, ts = _torch_tensors(torch, case, *xs), _torch_tensors(torch, case, *ts)
    return _cycle(list(zip(xs, ts, strict=True)))


def _torch_mlp(case):
    import torch

    model = _torch_mlp_model(torch, case)
    opt = _torch_optimizer(torch, case, model.parameters())
    loss_fn = _torch_loss(torch, case)
    data = _torch_data(torch, case)

    def run():
        x, t = data()
        loss = loss_fn(model(x), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return Step(run, _torch_sync(torch, case))


def _torch_ensemble(case):
    """torch-func: stack_module_state + vmap + functional_call; torch-loop: E models in turn."""
    import copy

    import torch

    E = case["members"]
    loss_fn = _torch_loss(torch, case)
    data = _torch_data(torch, case)
    models = [_torch_mlp_model(torch, case) for _ in range(E)]
    if case["impl"] == "torch-loop":
        opts = [_torch_optimizer(torch, case, m.parameters()) for m in models]

        def run_loop():
            x, t = data()
            for model, opt in zip(models, opts, strict=True):
                loss = loss_fn(model(x), t)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        return Step(run_loop, _torch_sync(torch, case))
    from torch.func import functional_call, stack_module_state

    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def one(p, b, x):
        return functional_call(base, (p, b), (x,))

    members = torch.vmap(one, in_dims=(0, 0, None))
    opt = _torch_optimizer(torch, case, list(params.values()))
    ce = case.get("loss", "ce") == "ce"

    def run_func():
        x, t = data()
        out = members(params, buffers, x)  # (E, N, C)
        # Each member's mean loss, summed: member i's gradient is that of its own mean loss.
        if ce:
            loss = loss_fn(out.reshape(-1, out.shape[-1]), t.repeat(E)) * E
        else:
            loss = loss_fn(out, t.expand_as(out)) * E
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return Step(run_func, _torch_sync(torch, case))


def _torch_arrays(torch, case, *shapes):
    rng = np.random.default_rng(case.get("seed", 0))
    dt = np.dtype(case.get("dtype", "float32"))
    return _torch_tensors(torch, case, *[rng.standard_normal(s).astype(dt) for s in shapes])


def _torch_matmul(case):
    import torch

    a, b = _torch_arrays(torch, case, *_matmul_shapes(case))
    return Step(lambda: torch.matmul(a, b), _torch_sync(torch, case))


def _torch_dense(case):
    import torch

    n_in, n_out = case["n_in"], case["n_out"]
    dt = getattr(torch, case.get("dtype", "float32"))
    layer = torch.nn.Linear(n_in, n_out).to(device=_torch_device(case), dtype=dt)
    xs = _torch_arrays(torch, case, *[(case["batch"], n_in)] * N_BATCHES)
    (dy,) = _torch_arrays(torch, case, (case["batch"], n_out))
    data = _cycle(xs)
    if case["kind"] == "dense_fwd":  # a training forward: the graph is recorded, as in a step
        return Step(lambda: torch.relu(layer(data())), _torch_sync(torch, case))

    def run():
        x = data().requires_grad_(True)  # dx is computed, as nnkernel's input_grad=True
        layer.zero_grad(set_to_none=True)
        torch.relu(layer(x)).backward(dy)
        x.grad = None

    return Step(run, _torch_sync(torch, case))


def _torch_softmax_ce(case):
    import torch

    F = torch.nn.functional
    logits = _torch_arrays(torch, case, *[(case["batch"], case["classes"])] * N_BATCHES)
    logits = [z.requires_grad_(True) for z in logits]
    rng = np.random.default_rng(1)
    (labels,) = _torch_tensors(torch, case, rng.integers(0, case["classes"], case["batch"]))
    data = _cycle(logits)

    def run():  # value and gradient with respect to the logits, as nnkernel's fused loss
        z = data()
        loss = F.cross_entropy(z, labels)
        torch.autograd.grad(loss, z)

    return Step(run, _torch_sync(torch, case))


def _torch_adam(case):
    import torch

    model = _torch_mlp_model(torch, case)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return Step(opt.step, _torch_sync(torch, case))


_TORCH = {"mlp": _torch_mlp, "ensemble": _torch_ensemble, "matmul": _torch_matmul,
          "bmm": _torch_matmul, "dense_fwd": _torch_dense, "dense_fwd_bwd": _torch_dense,
          "softmax_ce": _torch_softmax_ce, "adam": _torch_adam}


# -- timing ----------------------------------------------------------------------------------
def calibrate(step: Step, warmup_s: float, round_s: float) -> int:
    """Warm up for about ``warmup_s`` (at least 3 steps); return steps filling ``round_s``."""
    step.run()
    step.sync()
    done, t0 = 1, time.perf_counter()
    while True:
        step.run()
        done += 1
        step.sync()
        elapsed = time.perf_counter() - t0
        if done >= 3 and elapsed >= warmup_s:
            break
    per_step = elapsed / (done - 1)
    return max(1, round(round_s / per_step))


def time_round(step: Step, steps: int) -> float:
    """Seconds per step over ``steps`` steps, the device synchronised before each clock read."""
    step.sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step.run()
    step.sync()
    return (time.perf_counter() - t0) / steps


def gemm_gflops(side: str, n: int, dtype: str, repeats: int, device: str = "cpu") -> list[float]:
    """GFLOP/s of n×n @ n×n matmuls in this process's library (the machine's GEMM ceiling)."""
    impl = "torch" if side == "torch" else "nnkernel"
    step = make_step({"kind": "matmul", "impl": impl, "n": n, "dtype": dtype, "device": device})
    calibrate(step, 0.0, 0.0)
    return [2.0 * n**3 / time_round(step, 1) / 1e9 for _ in range(repeats)]


# -- the worker process --------------------------------------------------------------------------
def describe(side: str, device: str = "cpu") -> dict:
    """Versions, thread settings and BLAS libraries as this process sees them."""
    import platform

    info = {"side": side, "python": platform.python_version(), "numpy": np.__version__,
            "pid": os.getpid(),
            "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                   "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                   "MKL_NUM_THREADS")}}
    if side == "torch":
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["torch_interop_threads"] = torch.get_num_interop_threads()
        info["torch_mkl"] = bool(torch.backends.mkl.is_available())
        info["torch_mkldnn"] = bool(torch.backends.mkldnn.is_available())
        if device == "gpu" and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    else:
        from ..backend.malloc import status

        info["malloc"] = status()
        if side == "nnkernel":
            import nnkernel

            info["nnkernel"] = nnkernel.__version__
        if device == "gpu":
            import cupy

            props = cupy.cuda.runtime.getDeviceProperties(0)
            info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) \
                else str(props["name"])
            info["cupy"] = cupy.__version__
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [{k: p.get(k) for k in ("internal_api", "version", "num_threads",
                                                       "threading_layer", "architecture")}
                               for p in threadpool_info()]
    except ImportError:
        info["threadpools"] = "threadpoolctl not installed"
    info["torch_loaded"] = "torch" in sys.modules
    return info


def serve(handle, stdin=None) -> None:
    """Answer JSON-line commands with ``handle(cmd) -> dict`` until "quit" or end of input.

    The protocol uses a private copy of stdout; file descriptor 1 is pointed at
    stderr so a library that prints cannot corrupt an answer.
    """
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in stdin or sys.stdin:
        cmd = json.loads(line)
        if cmd.get("cmd") == "quit":
            break
        try:
            answer = handle(cmd)
        except Exception as err:  # noqa: BLE001 - sent back to the parent, which raises it
            answer = {"error": f"{type(err).__name__}: {err}",
                      "traceback": traceback.format_exc()}
        out.write(json.dumps(answer) + "\n")
    out.close()


class BenchWorker:
    """Command handler of one library's process: holds the cases set up in it."""

    def __init__(self, side: str, torch_threads: int = 2):
        self.side = side
        self.cases: dict = {}
        if side == "torch":
            import torch

            torch.set_num_threads(torch_threads)
        if side == "numpy":
            # The hand-written step is the floor a library could reach: it gets the allocator
            # setting nnkernel's NumPy kernels use, so a comparison measures library overhead.
            from ..backend.malloc import keep_freed_memory

            keep_freed_memory()

    def __call__(self, cmd: dict) -> dict:
        op = cmd["cmd"]
        if op == "info":
            return describe(self.side, cmd.get("device", "cpu"))
        if op == "ceiling":
            return {"gflops": gemm_gflops(self.side, cmd["n"], cmd["dtype"], cmd["repeats"],
                                          cmd.get("device", "cpu"))}
        if op == "setup":
            case = cmd["case"]
            if SIDES.get(case["impl"]) != self.side:
                raise ValueError(f"implementation {case['impl']!r} does not run in the "
                                 f"{self.side} worker")
            step = make_step(case)
            steps = calibrate(step, cmd.get("warmup_s", 0.1), cmd.get("round_s", 0.2))
            self.cases[cmd["id"]] = (step, steps)
            return {"steps": steps}
        if op == "round":
            step, steps = self.cases[cmd["id"]]
            return {"seconds": time_round(step, steps), "steps": steps}
        if op == "drop":
            self.cases.clear()
            return {}
        raise ValueError(f"unknown command {op!r}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("nnkernel", "numpy", "torch"):
        print("usage: python -m nnkernel.bench.workers nnkernel|numpy|torch [torch threads]",
              file=sys.stderr)
        return 2
    threads = int(argv[1]) if len(argv) > 1 else 2
    serve(BenchWorker(argv[0], threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())

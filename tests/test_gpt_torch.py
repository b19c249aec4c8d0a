"""`nk.gpt` against the same network in PyTorch (nanoGPT's `Block`), float64, rtol 1e-8.

The torch side is nanoGPT's ``model.py`` (CausalSelfAttention, MLP, Block, GPT with
``lm_head.weight = wte.weight``), written out below with its tanh GELU (GPT-2's;
nanoGPT's MLP uses the erf form) and no dropout. nnkernel's weights are copied into
it as a state dict, each Linear weight transposed and nothing else (nnkernel stores
(in, out), torch (out, in)): the layout is the same. Compared: logits, loss, every
parameter gradient, then the losses of 10 AdamW steps (torch.optim.AdamW, the same
weight decay on every parameter: nnkernel's optimizers have no per-parameter decay
selection yet), on numpy, array-api-strict, torch, CuPy's test double (the reference
kernels on a fake CuPy) and a real GPU where there is one.
Also here: cross-entropy over (B, T, V) logits with ``ignore_index`` against
``F.cross_entropy(logits.view(-1, V), t.view(-1), ignore_index=...)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import host, make, torch_or_skip
from cupy_double import fake_cupy  # noqa: F401 - the fixture

import nnkernel as nk
from nnkernel.train.step import train_step

torch = torch_or_skip()
nn, F = torch.nn, torch.nn.functional

RTOL, ATOL = 1e-8, 1e-12
V, T_MAX, C, HEADS, LAYERS, T, B = 11, 8, 8, 2, 2, 5, 3
IGNORE = -1


# -- nanoGPT's model.py, as written there (dropout 0, bias=True) ----------------------------
class CausalSelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.register_buffer("bias", torch.tril(torch.ones(T_MAX, T_MAX)).view(1, 1, T_MAX,
                                                                                  T_MAX))

    def forward(self, x):
        Bx, Tx, Cx = x.size()
        q, k, v = self.c_attn(x).split(Cx, dim=2)
        k = k.view(Bx, Tx, HEADS, Cx // HEADS).transpose(1, 2)
        q = q.view(Bx, Tx, HEADS, Cx // HEADS).transpose(1, 2)
        v = v.view(Bx, Tx, HEADS, Cx // HEADS).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :Tx, :Tx] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = att @ v
        y = y.transpose(1, 2).contiguous().view(Bx, Tx, Cx)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_fc = nn.Linear(C, 4 * C)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * C, C)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(C)
        self.attn = CausalSelfAttention()
        self.ln_2 = nn.LayerNorm(C)
        self.mlp = MLP()

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(V, C), wpe=nn.Embedding(T_MAX, C),
            h=nn.ModuleList([Block() for _ in range(LAYERS)]), ln_f=nn.LayerNorm(C)))
        self.lm_head = nn.Linear(C, V, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying

    def forward(self, idx):
        pos = torch.arange(0, idx.size(1), dtype=torch.long)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


def torch_names():
    """nnkernel key -> (nanoGPT state-dict name, transposed?), in nnkernel's forward order."""
    names = {"0.W": ("transformer.wte.weight", False), "1.W": ("transformer.wpe.weight", False)}
    for layer in range(LAYERS):
        a, m, h = 2 + 2 * layer, 3 + 2 * layer, f"transformer.h.{layer}"
        names.update({
            f"{a}.0.gamma": (f"{h}.ln_1.weight", False), f"{a}.0.beta": (f"{h}.ln_1.bias", False),
            f"{a}.1.Wqkv": (f"{h}.attn.c_attn.weight", True),
            f"{a}.1.bqkv": (f"{h}.attn.c_attn.bias", False),
            f"{a}.1.Wo": (f"{h}.attn.c_proj.weight", True),
            f"{a}.1.bo": (f"{h}.attn.c_proj.bias", False),
            f"{m}.0.gamma": (f"{h}.ln_2.weight", False), f"{m}.0.beta": (f"{h}.ln_2.bias", False),
            f"{m}.1.W": (f"{h}.mlp.c_fc.weight", True), f"{m}.1.b": (f"{h}.mlp.c_fc.bias", False),
            f"{m}.3.W": (f"{h}.mlp.c_proj.weight", True),
            f"{m}.3.b": (f"{h}.mlp.c_proj.bias", False)})
    f = 2 + 2 * LAYERS
    names.update({f"{f}.gamma": ("transformer.ln_f.weight", False),
                  f"{f}.beta": ("transformer.ln_f.bias", False)})
    return names


def torch_twin(model):
    """nanoGPT's GPT in float64 holding ``model``'s weights (each Linear weight transposed)."""
    twin = GPT().double()
    state = twin.state_dict()
    for key, (name, transposed) in torch_names().items():
        value = torch.tensor(host(model.params[key]))
        state[name] = value.T.contiguous() if transposed else value
    state["lm_head.weight"] = state["transformer.wte.weight"]  # one tensor, as in nanoGPT
    twin.load_state_dict(state)
    return twin


def torch_loss(logits, targets):
    return F.cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=IGNORE)


def nk_loss(y, t, **kw):
    return nk.losses.cross_entropy(y, t, ignore_index=IGNORE, **kw)


def batches(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = rng.integers(0, V, (B, T))
        targets = rng.integers(0, V, (B, T))
        targets[0, :2] = IGNORE  # padding: ignored by the loss
        out.append((ids, targets))
    return out


def close(ours, theirs, what):
    np.testing.assert_allclose(host(ours), theirs.detach().numpy(), rtol=RTOL, atol=ATOL,
                               err_msg=what)


def check_against_torch(backend):
    model = nk.gpt(V, T_MAX, C, HEADS, LAYERS, seed=3, dtype="float64", backend=backend)
    assert list(model.params) == list(torch_names())  # GPT-2's forward order
    twin = torch_twin(model)
    params = dict(twin.named_parameters())
    (ids, targets), = batches(1)

    logits = model.forward(make(backend, ids), train=True)
    value, dy = nk_loss(logits, make(backend, targets))
    model.backward(dy, input_grad=False)
    t_logits = twin(torch.tensor(ids))
    t_value = torch_loss(t_logits, torch.tensor(targets))
    t_value.backward()
    close(logits, t_logits, "logits")
    close(value, t_value, "loss")
    for key, (name, transposed) in torch_names().items():
        grad = params[name].grad
        close(model.grads[key], grad.T if transposed else grad, f"gradient of {key} ({name})")

    # 10 AdamW steps on fresh batches: the same losses
    settings = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    opt = nk.optim.AdamW(**settings)
    t_opt = torch.optim.AdamW(twin.parameters(), **settings)
    ours, theirs = [], []
    for ids, targets in batches(10, seed=1):
        value, _ = train_step(model, nk_loss, opt, (make(backend, ids), make(backend, targets)))
        ours.append(float(value))
        t_opt.zero_grad()
        t_value = torch_loss(twin(torch.tensor(ids)), torch.tensor(targets))
        t_value.backward()
        t_opt.step()
        theirs.append(t_value.item())
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)
    assert ours[-1] < ours[0] - 0.01  # it learns something (the same batches would show more)
    for key, (name, transposed) in torch_names().items():
        p = params[name]
        close(model.params[key], p.T if transposed else p, f"{key} after 10 steps")
    return model


def test_gpt_matches_nanogpt(backend):
    check_against_torch(backend)


@pytest.mark.usefixtures("fake_cupy")
def test_gpt_matches_nanogpt_on_the_cupy_double():
    model = check_against_torch("cupy")
    assert model.backend.name == "cupy" and type(model.params["0.W"]).__module__ != "numpy"


# -- cross-entropy over tokens ---------------------------------------------------------------
@pytest.mark.parametrize("ignore", [None, -100, 3], ids=["none", "-100", "id3"])
def test_token_cross_entropy_matches_torch(backend, ignore):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 5, 7)) * 3
    targets = rng.integers(0, 7, (2, 5))
    if ignore is not None:
        targets[0, 1] = targets[1, 4] = ignore
    weights_ok = ignore is not None
    value, dy = (nk.losses.cross_entropy(make(backend, logits), make(backend, targets),
                                         ignore_index=ignore) if weights_ok else
                 nk.losses.cross_entropy(make(backend, logits), make(backend, targets)))
    tl = torch.tensor(logits, requires_grad=True)
    tv = F.cross_entropy(tl.view(-1, 7), torch.tensor(targets).view(-1),
                         ignore_index=-100 if ignore is None else ignore)
    tv.backward()
    close(value, tv, "loss")
    close(dy, tl.grad, "dL/dlogits")
    if ignore is not None:  # nothing flows to an ignored token
        assert not host(dy)[targets == ignore].any()


def test_ignore_index_with_weights_members_and_an_all_ignored_batch():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((2, 3, 4, 5))  # an ensemble of 2 members, (B, T) = (3, 4)
    targets = rng.integers(0, 5, (3, 4))
    targets[0] = -1
    value, dy = nk.losses.cross_entropy(logits, targets, ignore_index=-1, members=True)
    for e in range(2):  # each member as if alone
        v, d = nk.losses.cross_entropy(logits[e], targets, ignore_index=-1)
        np.testing.assert_allclose(value[e], v, rtol=1e-14)
        np.testing.assert_allclose(dy[e], d, rtol=1e-14)
    w = rng.uniform(0.5, 2.0, (3, 4))
    v, d = nk.losses.cross_entropy(logits[0], targets, ignore_index=-1, weights=w)
    tl = torch.tensor(logits[0], requires_grad=True)
    keep = torch.tensor(targets != -1)
    per = F.cross_entropy(tl.view(-1, 5), torch.tensor(np.where(targets < 0, 0, targets)).view(-1),
                          reduction="none").view(3, 4)
    tv = (per * torch.tensor(w) * keep).sum() / keep.sum()
    tv.backward()
    close(v, tv, "weighted loss")
    close(d, tl.grad, "weighted gradient")
    v, d = nk.losses.cross_entropy(logits[0], np.full((3, 4), -1), ignore_index=-1)
    assert float(v) == 0.0 and not d.any()  # torch: NaN (0/0)
    with pytest.raises(nk.ShapeError, match="labels must be in"):
        nk.losses.cross_entropy(logits[0], np.full((3, 4), 9), ignore_index=-1)
    with pytest.raises(nk.DTypeError, match="integer labels"):
        nk.losses.cross_entropy(logits[0], rng.random((3, 4, 5)), ignore_index=-1)


# -- GPT-2's initialisation -------------------------------------------------------------------
def test_gpt_initialisation_is_gpt2s():
    layers, dim = 3, 48
    model = nk.gpt(50, 16, dim, 4, layers, seed=0, dtype="float64")
    p = {k: host(v) for k, v in model.params.items()}
    proj = 0.02 / math.sqrt(2 * layers)
    for key, value in p.items():
        name = key.rsplit(".", 1)[-1]
        if name in ("b", "bqkv", "bo", "beta"):
            assert not value.any(), key
        elif name == "gamma":
            assert (value == 1.0).all(), key
        else:
            is_proj = name == "Wo" or key.endswith(".3.W")
            want = proj if is_proj else 0.02
            assert abs(value.std() / want - 1) < 0.1, (key, value.std(), want)
            assert abs(value.mean()) < 4 * want / math.sqrt(value.size), key
    assert model.num_parameters() == (50 * dim + 16 * dim + layers * (12 * dim * dim + 13 * dim)
                                      + 2 * dim)  # nanoGPT's count with a tied head


def test_decay_keys_are_the_weight_matrices():
    from nnkernel.nn.gpt import decay_keys

    model = nk.gpt(V, T_MAX, C, HEADS, 2, seed=0)
    assert decay_keys(model) == ["2.1.Wqkv", "2.1.Wo", "3.1.W", "3.3.W",
                                 "4.1.Wqkv", "4.1.Wo", "5.1.W", "5.3.W"]
    untied = nk.gpt(V, T_MAX, C, HEADS, 1, tie_weights=False, seed=0)
    assert decay_keys(untied)[-1] == "5.W" and "0.W" not in decay_keys(untied)


def test_normal_init_by_name_round_trips_through_the_config():
    dense = nk.Dense(40, 50, init="normal(0.005)")
    model = nk.Sequential(dense, seed=0, dtype="float64")
    assert model.config()["layers"][0]["init"] == "normal(0.005)"
    assert abs(host(model.params["0.W"]).std() / 0.005 - 1) < 0.05
    rebuilt = nk.Sequential.from_config(model.config(), dtype="float64")
    np.testing.assert_array_equal(host(rebuilt.params["0.W"]), host(model.params["0.W"]))
    for bad in ("normal(-1)", "normal(x)", "normal(inf)"):
        with pytest.raises(nk.ConfigError, match="standard deviation"):
            nk.Dense(2, 3, init=bad)

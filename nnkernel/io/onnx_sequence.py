"""ONNX node builders for token and sequence models (used by `nnkernel.io.onnx_export`).

    Residual           y = x + f(x): the chain of its layers, then Add
    Embedding          Gather(W, ids, axis=0); the graph input is then int64 ids (N, T)
    PositionEmbedding  x + W[:T]: Slice of W by the length T read from x's shape, then Add
    MultiHeadAttention on (N, T, C), H heads of D = C/H:
        qkv = MatMul(x, Wqkv) + bqkv;  q, k, v = Split(qkv) into three C-wide blocks
        q_h, v_h = Transpose(Reshape(·, (N, T, H, D)), (0, 2, 1, 3))      (N, H, T, D)
        k_hᵀ    = Transpose(Reshape(k, (N, T, H, D)), (0, 2, 3, 1))       (N, H, D, T)
        S = MatMul(q_h, k_hᵀ) · (1/√D);  causal: Where(col > row, −∞, S)
        o = MatMul(Softmax(S, axis=−1), v_h), heads merged back to (N, T, C)
        y = MatMul(o, Wo) + bo
    TiedOutput         MatMul(x, Transpose(W)) with the embedding's W (one initializer)

The causal mask is built from the scores' own length, Range(0, T) compared with
itself, so one graph serves every T (1 … max_len); it is built once and shared by
every attention layer. Dropout on the attention probabilities is the identity at
inference. The weights keep nnkernel's layout (nanoGPT's, transposed from torch).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError

SEQUENCE_LAYERS = ("Residual", "Embedding", "PositionEmbedding", "MultiHeadAttention",
                   "TiedOutput")


def _ints(g, name: str, values) -> str:
    """An int64 initializer (shapes, axes, indices), added once per name."""
    if name not in g.int_consts:
        g.int_consts.add(name)
        g.initializers.append(g.onnx.numpy_helper.from_array(
            np.asarray(values, dtype=np.int64), name))
    return name


def residual(g, path, layer, x):
    before = getattr(g, "member_channels", False)
    fx = g.chain(g.children[path], x)                      # f(x)
    if getattr(g, "member_channels", False) and not before:
        # an ensemble's conv branch went to members-in-channels (N, E·C, H, W); x is shared
        x = g.op("Tile", [x, _ints(g, f"{path}.repeats", [1, g.ensemble, 1, 1])],
                 f"{path}.tile")
    return g.op("Add", [x, fx], f"{path}.residual")        # y = x + f(x)


def embedding(g, path, layer, x):
    if x != g.input_name:
        raise ConfigError(f"cannot export layer {path} (Embedding) to ONNX: it takes the "
                          f"model's integer ids, so it must be the model's first layer")
    return g.op("Gather", [g.param(f"{path}.W"), x], f"{path}.embedding", axis=0)  # W[ids]


def position_embedding(g, path, layer, x):
    T = g.op("Shape", [x], f"{path}.length", start=-2, end=-1)  # [T]
    rows = g.op("Slice", [g.param(f"{path}.W"), _ints(g, "seq.zero", [0]), T,
                          _ints(g, "seq.axis0", [0])], f"{path}.W_T")  # W[:T]
    return g.op("Add", [x, rows], f"{path}.add_positions")      # x + W[:T]


def _causal_future(g, scores: str) -> str:
    """(T, T) booleans, True where column > row (a key after the query), from the scores'
    length; built once per graph."""
    if getattr(g, "future", None) is None:
        T = g.op("Shape", [scores], "mask.length", start=-1)                  # [T]
        T = g.op("Squeeze", [T, _ints(g, "seq.axis0", [0])], "mask.T")        # T
        idx = g.op("Range", [_ints(g, "mask.start", 0), T, _ints(g, "mask.delta", 1)],
                   "mask.idx")                                                # 0 … T−1
        rows = g.op("Unsqueeze", [idx, _ints(g, "mask.axis1", [1])], "mask.rows")  # (T, 1)
        g.future = g.op("Greater", [idx, rows], "mask.future")                # j > i
    return g.future


def attention(g, path, layer, x):
    C, H = int(layer["dim"]), int(layer["heads"])
    D = C // H
    p = f"{path}."
    qkv = g.op("MatMul", [x, g.param(f"{path}.Wqkv")], f"{p}qkv_matmul")
    qkv = g.op("Add", [qkv, g.param(f"{path}.bqkv")], f"{p}qkv")      # x Wqkv + bqkv
    split = _ints(g, f"{p}split", [C, C, C])
    names = [f"{p}q", f"{p}k", f"{p}v"]
    g.nodes.append(g.onnx.helper.make_node("Split", [qkv, split], names, name=f"{p}split",
                                           axis=-1))
    heads = _ints(g, f"{p}heads_shape", [0, 0, H, D])               # (N, T, H, D)
    q, k, v = (g.op("Reshape", [t, heads], f"{t}_heads") for t in names)
    q = g.op("Transpose", [q], f"{p}q_h", perm=[0, 2, 1, 3])        # (N, H, T, D)
    kt = g.op("Transpose", [k], f"{p}k_hT", perm=[0, 2, 3, 1])      # (N, H, D, T)
    v = g.op("Transpose", [v], f"{p}v_h", perm=[0, 2, 1, 3])
    s = g.op("MatMul", [q, kt], f"{p}q_kT")
    s = g.op("Mul", [s, g.const(1.0 / math.sqrt(D))], f"{p}scores")  # S = q kᵀ / √D
    if layer["causal"]:
        s = g.op("Where", [_causal_future(g, s), g.const(-math.inf), s], f"{p}masked")
    P = g.op("Softmax", [s], f"{p}probs", axis=-1)                  # P = softmax(S + mask)
    o = g.op("MatMul", [P, v], f"{p}o_h")                           # o_h = P v_h
    o = g.op("Transpose", [o], f"{p}o_t", perm=[0, 2, 1, 3])        # (N, T, H, D)
    o = g.op("Reshape", [o, _ints(g, f"{p}merged_shape", [0, 0, C])], f"{p}o")
    y = g.op("MatMul", [o, g.param(f"{path}.Wo")], f"{p}out_matmul")
    return g.op("Add", [y, g.param(f"{path}.bo")], f"{p}attention")  # y = o Wo + bo


def tied_output(g, path, layer, x):
    Wt = g.op("Transpose", [g.param(f"{path}.W")], f"{path}.W_transposed", perm=[1, 0])
    return g.op("MatMul", [x, Wt], f"{path}.logits")                # logits = x Wᵀ


BUILDERS = {"Residual": residual, "Embedding": embedding,
            "PositionEmbedding": position_embedding, "MultiHeadAttention": attention,
            "TiedOutput": tied_output}

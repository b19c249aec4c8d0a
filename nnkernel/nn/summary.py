"""``model.summary()``: a per-layer table of output shapes and parameter counts (as Keras)."""

from __future__ import annotations

import math


def summary_table(model) -> str:
    lead = ("N",) if model.ensemble is None else (model.ensemble, "N")
    rows, shape = [], model.input_shape
    if any(d is None for d in shape) and model._shapes:  # fixed by the first input's shape
        shape = next(iter(model._shapes))
    for i, layer in enumerate(model.layers):
        shape = tuple(layer.output_shape(shape))
        owner = model._owners[i]
        n = 0 if owner != i else sum(
            math.prod(model.params[model._keys[i][name]].shape) for name in layer.param_names)
        kind = type(layer).__name__ + (f" (shares {owner})" if owner != i else "")
        rows.append((f"{i}", kind, _shape_text(lead + shape), f"{n:,}"))
    header = ("#", "layer", "output shape", "parameters")
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(4)]
    line = "  ".join
    out = [line(h.ljust(w) if c < 3 else h.rjust(w) for c, (h, w) in enumerate(
        zip(header, widths, strict=True)))]
    out.append("-" * len(out[0]))
    for r in rows:
        out.append(line(v.ljust(w) if c < 3 else v.rjust(w) for c, (v, w) in enumerate(
            zip(r, widths, strict=True))))
    out.append("-" * len(out[0]))
    state = sum(math.prod(v.shape) for v in model.state.values())
    out.append(f"parameters: {model.num_parameters():,}"
               + (f"  (+ {state:,} non-trainable state values)" if state else "")
               + f"  ({model.backend.name} {model.backend.device_name}, "
               f"{model.config()['dtype']})")
    return "\n".join(out)


def _shape_text(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"

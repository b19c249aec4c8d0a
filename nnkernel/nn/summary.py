"""``model.summary()``: a per-layer table of output shapes and parameter counts (as Keras)."""

from __future__ import annotations

import math


def summary_table(model) -> str:
    lead = ("N",) if model.ensemble is None else (model.ensemble, "N")
    rows, shape = [], model.input_shape
    if any(d is None for d in shape) and model._shapes:  # fixed by the first input's shape
        shape = next(iter(model._shapes))
    shapes = {}
    for pos in model.plan.walk():
        top = "." not in pos.path
        if top:
            shape = tuple(pos.layer.output_shape(shape))
        n = 0 if not pos.owns else sum(
            math.prod(model.params[pos.keys[name]].shape) for name in pos.layer.param_names)
        kind = "  " * pos.path.count(".") + type(pos.layer).__name__ + (
            f" (shares {pos.owner.path})" if not pos.owns else "")
        shapes[pos.path] = _shape_text(lead + shape) if top else ""
        rows.append((pos.path, kind, shapes[pos.path], f"{n:,}"))
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

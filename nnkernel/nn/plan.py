"""Where each layer of a model sits: its path, the keys of its arrays, who shares what.

A model is a tree: the model's layers, and inside a combinator (Residual) its own
layers, applied in order. Walking it in forward order (depth first) gives every
position a path ("3", or "3.0" for the first layer inside position 3) and each of
its parameters and state arrays a key "<path>.<name>", so ``model.params`` lists
parameters in the order the forward pass uses them.

Sharing: the same layer object placed twice owns its arrays at its first position;
later positions use the same keys, and their gradients add. Tying: a layer may name
parameters that are another layer's (`Layer.ties`, e.g. an output projection that
is the token embedding's W transposed); that layer must come before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError, ShapeError


@dataclass
class Position:
    layer: object
    path: str
    keys: dict                  # short name -> store key (own, shared or tied)
    sample_ndim: int            # per-sample axes of this position's input
    owner: Position | None = None  # the first position of the same layer object
    children: list = field(default_factory=list)

    @property
    def owns(self) -> bool:
        return self.owner is None


@dataclass
class Plan:
    positions: list        # the model's top-level positions
    output_shape: tuple
    param_keys: list       # in forward order
    state_keys: list
    shared_keys: frozenset  # keys used at several positions (their gradients add)

    def walk(self, positions=None):
        """Every position, depth first in forward order."""
        for pos in self.positions if positions is None else positions:
            yield pos
            yield from self.walk(pos.children)


def model_input_shape(layers, input_shape=None) -> tuple:
    """The per-sample input shape: the one given, else the first one a layer fixes."""
    shape = tuple(input_shape) if input_shape is not None else next(
        (layer.input_shape() for layer in layers if layer.input_shape() is not None), None)
    if shape is None:
        raise ConfigError("the model cannot tell its input shape; pass input_shape=")
    return shape


def plan(layers, input_shape) -> Plan:
    """The positions of ``layers`` applied in order to per-sample inputs of ``input_shape``."""
    first_at: dict = {}  # id(layer) -> its owning Position
    param_keys, state_keys, uses = [], [], {}

    def place(layer, path, shape, owner_twin):
        if owner_twin is None:
            owner_twin = first_at.get(id(layer))
        pos = Position(layer, path, {}, len(shape), owner=owner_twin)
        if owner_twin is not None:
            pos.keys = dict(owner_twin.keys)
        else:
            first_at[id(layer)] = pos
            for name in layer.param_names:
                pos.keys[name] = f"{path}.{name}"
                param_keys.append(pos.keys[name])
            for name in layer.state_names:
                pos.keys[name] = f"{path}.{name}"
                state_keys.append(pos.keys[name])
            for name, (source, source_name) in layer.ties.items():
                src = first_at.get(id(source))
                if src is None or source_name not in src.keys:
                    raise ConfigError(f"layer {path} {type(layer).__name__} ties its {name!r} "
                                      f"to a {type(source).__name__} that does not come "
                                      f"before it in the model")
                pos.keys[name] = src.keys[source_name]
        for name in list(layer.param_names) + list(layer.ties):
            uses[pos.keys[name]] = uses.get(pos.keys[name], 0) + 1
        inner = shape
        for j, child in enumerate(layer.children):
            twin = owner_twin.children[j] if owner_twin is not None else None
            child_pos, inner = place(child, f"{path}.{j}", inner, twin)
            pos.children.append(child_pos)
        try:
            out = tuple(layer.output_shape(shape))
        except ShapeError as e:
            raise ShapeError(f"layer {path} {type(layer).__name__}: {e}") from None
        return pos, out

    positions, shape = [], tuple(input_shape)
    for i, layer in enumerate(layers):
        pos, shape = place(layer, str(i), shape, None)
        positions.append(pos)
    shared = frozenset(k for k, n in uses.items() if n > 1)
    return Plan(positions, shape, param_keys, state_keys, shared)


def initial_arrays(the_plan: Plan, rng, ensemble) -> dict:
    """Host float64 arrays of every parameter and state entry, drawn in forward order."""
    host = {}

    def init(positions):
        for i, pos in enumerate(positions):
            if pos.owns:
                nxt = positions[i + 1].layer if i + 1 < len(positions) else None
                layer = pos.layer
                for name, value in layer.init_params(rng, ensemble, nxt).items():
                    host[pos.keys[name]] = value
                for name, value in layer.init_state(ensemble).items():
                    host[pos.keys[name]] = value
                init(pos.children)

    init(the_plan.positions)
    return host


def find_path(the_plan: Plan, layer) -> str | None:
    """The path of the position that owns ``layer``'s arrays."""
    for pos in the_plan.walk():
        if pos.layer is layer and pos.owns:
            return pos.path
    return None

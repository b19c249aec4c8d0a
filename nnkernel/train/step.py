"""One training step: forward → loss → backprop → update, in one function.

    value, score = train_step(model, loss, optimizer, (x, y, w))

``fit``, the command line, the scikit-learn estimators and the benchmark call it
(through `fit`, or directly). What varies around it wraps it instead of
branching inside the loop:

- data parallelism (`nnkernel.distributed.DataParallel.step_for`) scales each
  rank's dL/dy by its share of the batch and allreduces the gradients between
  backprop and update (the ``gradients`` hook);
- a compiled step (`nnkernel.train.compiled.CompiledStep`) runs this same
  sequence as one traced program.

``score(out, y)`` computes what the caller wants from the step's outputs (the
number of correct predictions) while they are at hand.
"""

from __future__ import annotations


def train_step(model, loss, optimizer, batch, *, seed=None, score=None, gradients=None):
    """One step on ``batch`` = (x, y) or (x, y, sample weights); returns (loss value, score).

    ``seed`` restarts the Dropout stream (fit passes (seed, epoch, step), so a resumed
    run draws the same masks); ``gradients(model)`` runs between backprop and update.
    """
    x, y, w = batch if len(batch) == 3 else (*batch, None)
    if seed is not None and model.stochastic:
        model.reseed(seed)
    out = model.forward(x, train=True)                   # y = f(x), recorded
    value, dy = loss(out, y, members=model.ensemble is not None, weights=w)  # L, dL/dy
    model.backward(dy, input_grad=False)                 # dL/dθ into model.grads
    if gradients is not None:
        gradients(model)
    optimizer.step(model.params, model.grads)            # θ ← update(θ, dL/dθ)
    return value, (None if score is None else score(out, y))

"""Test metrics of a trained model and how the command line prints them."""

from __future__ import annotations

import json

import numpy as np


def test_metrics(model, X, y, loss, data, batch_size, *, classes: bool = False) -> dict:
    """Test loss and accuracy from one pass of the model over X.

    An ensemble gets them per member and of its mean probabilities (its mean output for a
    regression). With ``classes`` a classifier also gets the F1 macro and confusion matrix of
    the prediction its accuracy counts.
    """
    from ..backend import to_numpy
    from ..losses import cross_entropy, get_loss
    from ..nn.ensemble import ensemble_log_loss, mean_probabilities
    from ..train.loop import evaluation_pass

    loss_fn = get_loss(loss)
    classify = data.task == "classification"
    test_loss, test_acc, on_device, _ = evaluation_pass(model, X, y, loss_fn,
                                                        batch_size=batch_size, keep_outputs=True)
    out = to_numpy(on_device)
    labels = np.argmax(y, axis=-1) if (classify and y.ndim == 2) else y
    result = {"n_test": int(X.shape[0])}
    if model.ensemble is None:
        if classify and test_acc is None:  # a classifier trained with another loss (one-hot)
            test_acc = float(np.mean(np.argmax(out, axis=-1) == labels))
        result.update(test_loss=test_loss, test_accuracy=test_acc)
        scores = out
    elif classify:
        if test_acc is None:
            test_acc = np.mean(np.argmax(out, -1) == labels, axis=1).tolist()
        scores = to_numpy(mean_probabilities(on_device))
        result.update(member_test_loss=test_loss, member_test_accuracy=test_acc,
                      test_accuracy=float(np.mean(np.argmax(scores, axis=-1) == labels)),
                      test_loss=(ensemble_log_loss(scores, labels) if loss_fn is cross_entropy
                                 else float(np.mean(test_loss))))
    else:  # the ensemble's prediction is its members' mean
        result.update(member_test_loss=test_loss, member_test_accuracy=test_acc,
                      test_accuracy=None,
                      test_loss=float(loss_fn(out.mean(axis=0), y.reshape(out.shape[1:]))[0]))
    if classes and classify:
        result.update(class_metrics(np.argmax(scores, axis=-1), labels, model.n_out))
    return result


def class_metrics(predicted, labels, n_classes) -> dict:
    """F1 macro and the confusion matrix of class predictions."""
    from ..train.metrics import confusion_matrix, f1_macro

    counts = confusion_matrix(labels, predicted, n_classes)
    return {"f1_macro": f1_macro(labels, predicted), "confusion_matrix": counts.tolist()}


def print_result(args, result, model) -> None:
    """The result on stdout: one JSON object with --json, else lines; what was scored is named
    (``result["scored"]``), and only held-out rows are called "test"."""
    if args.json:
        print(json.dumps(result, default=str))
        return
    if args.quiet:
        return
    acc = result["test_accuracy"]
    test = "" if result.get("rows") == "all" else "test "
    lines = []
    if model.ensemble is not None:
        loss_head, acc_head = f"{test}loss", f"{test}accuracy"
        lines.append(f"{'member':>6}  {'lr':>9}  {loss_head:>9}  {acc_head:>13}")
        lrs = result.get("member_lr") or [None] * model.ensemble
        accs = result["member_test_accuracy"] or [None] * model.ensemble
        for i, (lr, loss, a) in enumerate(zip(lrs, result["member_test_loss"], accs,
                                              strict=True)):
            lr_text = f"{lr:9.3g}" if lr is not None else f"{'':9}"
            a_text = f"{a:13.4f}" if a is not None else f"{'-':>13}"
            lines.append(f"{i:>6}  {lr_text}  {loss:9.4f}  {a_text}")
        what = "ensemble (mean probabilities)" if acc is not None else "ensemble (mean output)"
        lines.append(f"{what}: {test}accuracy {acc:.4f}, {test}loss {result['test_loss']:.4f}"
                     if acc is not None else f"{what}: {test}loss {result['test_loss']:.4f}")
        if result.get("scored"):
            lines.append(f"({result['n_test']} samples: {result['scored']})")
    else:
        text = f"{test}loss {result['test_loss']:.4f}"
        if acc is not None:
            text = f"{test}accuracy {acc:.4f}  " + text
        scored = f": {result['scored']}" if result.get("scored") else ""
        lines.append(f"{text}  ({result['n_test']} samples{scored})")
    if "train_seconds" in result:
        sps = result["samples_per_second"]
        lines.append(f"trained {result['epochs_this_run']} epoch(s) in "
                     f"{result['train_seconds']:.1f} s"
                     + (f", {sps:,.0f} samples/s" if sps else "")
                     + f" ({result['backend']} {result['device']} {result['dtype']})")
    if result.get("out"):
        lines.append(f"saved to {result['out']}")
    print("\n".join(lines))


def print_text_result(args, result) -> None:
    """A language model's result: the held-out loss in nats/token and bits per character,
    what was scored, and (after training) the time and rate."""
    if args.json:
        print(json.dumps(result, default=str))
        return
    if args.quiet:
        return
    lines = [f"validation loss {result['val_loss']:.4f} nats/token, {result['val_bpc']:.4f} "
             f"bits/character  ({result['val_windows']} windows of the held-out "
             f"{result['val_characters']:,} characters of {result['dataset']})"]
    if "train_seconds" in result:
        rate = result.get("tokens_per_second")
        lines.append(f"trained {result['steps_this_run']} step(s) in "
                     f"{result['train_seconds']:.1f} s" + (f", {rate:,.0f} tokens/s" if rate
                                                           else "")
                     + f" ({result['backend']} {result['device']} {result['dtype']})")
    if result.get("out"):
        lines.append(f"saved to {result['out']}")
    print("\n".join(lines))


def as_model_input(model, X, what, directory, hint=None):
    """X as the model takes it: flat rows checked against its width; for an image model,
    flat rows of C·H·W values reshaped to (n, C, H, W) (a view), or images checked.
    ``hint``: why the width may be wrong, said instead of "another architecture"."""
    import math

    from ..errors import ShapeError

    shape = tuple(model.input_shape)
    if len(shape) == 1:
        check_features(model, X.shape[1], what, directory, hint)
        return X
    text = "(" + ", ".join("any" if d is None else str(d) for d in shape) + ")"
    if X.ndim == 2 and None not in shape:
        if X.shape[1] != math.prod(shape):
            raise ShapeError(f"the model in {directory} takes images {text}, "
                             f"{math.prod(shape)} values per row, but {what} has "
                             f"{X.shape[1]}; it is a checkpoint of another architecture")
        return X.reshape(X.shape[0], *shape)
    if X.ndim == len(shape) + 1 and all(want is None or got == want
                                        for got, want in zip(X.shape[1:], shape, strict=True)):
        return X
    raise ShapeError(f"the model in {directory} takes images {text} (channels, height, width) "
                     f"per sample, but {what} has shape {tuple(X.shape)}")


def check_features(model, n_features, what, directory, hint=None):
    from ..errors import ShapeError

    if n_features != model.n_in:
        why = hint or "it is a checkpoint of another architecture"
        raise ShapeError(f"the model in {directory} takes {model.n_in} features, but {what} has "
                         f"{n_features}; {why}")

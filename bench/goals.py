"""The project's speed targets, checked against a `nnkernel bench --json` file.

    nnkernel bench --json out.json && python bench/goals.py out.json

Targets are the project's business, not a user's: they live here, beside the
benchmark scripts, and `nnkernel bench` itself only measures.
"""

from __future__ import annotations

import json
import sys


def check_goals(rows: list[dict]) -> list[dict]:
    """Each goal that the measured rows can answer: description, value, target, holds."""
    by = {(r["section"], r["case"], r["impl"]): r for r in rows}
    goals = []

    def add(text, value, target, higher_is_better=True):
        if value is None:
            return
        holds = value >= target if higher_is_better else value <= target
        goals.append({"goal": text, "value": value, "target": target,
                      "comparison": ">=" if higher_is_better else "<=", "holds": holds})

    r = by.get(("mlp", "784-512-512-10 N=256", "nnkernel"))
    if r and "torch" in r["vs"]:
        add("MLP step N=256: nnkernel speed vs PyTorch eager", r["vs"]["torch"]["median"], 1.25)
    r = by.get(("mlp", "784-512-512-10 N=1024", "nnkernel"))
    if r and r["pct_ceiling"] is not None:
        add("MLP step N=1024: nnkernel % of the NumPy GEMM ceiling", r["pct_ceiling"], 90.0)
    for opt in ("sgd", "adam"):
        r = by.get(("tiny", f"2-16-1 tanh mse {opt} N=64", "nnkernel"))
        if r and "torch" in r["vs"]:
            add(f"2-16-1 step ({opt}): nnkernel speed vs PyTorch eager",
                r["vs"]["torch"]["median"], 10.0)
        if r and "numpy-loop" in r["vs"]:
            add(f"2-16-1 step ({opt}): nnkernel time / hand-written NumPy time",
                1.0 / r["vs"]["numpy-loop"]["median"], 1.3, higher_is_better=False)
    r = by.get(("ensemble", "E=64 64-64-10 N=128", "nnkernel"))
    if r:
        if "torch-func" in r["vs"]:
            add("ensemble E=64: nnkernel speed vs torch.func (vmap)",
                r["vs"]["torch-func"]["median"], 1.6)
        if "torch-loop" in r["vs"]:
            add("ensemble E=64: nnkernel speed vs a loop over PyTorch models",
                r["vs"]["torch-loop"]["median"], 10.0)
    return goals


def format_goal(g: dict) -> str:
    verdict = "HOLDS" if g["holds"] else "MISSED"
    return f"  {verdict:<7}{g['goal']}: {g['value']:.2f} (goal {g['comparison']} {g['target']:g})"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python bench/goals.py BENCH.json", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        rows = json.load(f)["rows"]
    goals = check_goals(rows)
    if not goals:
        print("no goal can be answered from these rows (run the mlp, tiny and ensemble sections)")
    for g in goals:
        print(format_goal(g))
    return 0


if __name__ == "__main__":
    sys.exit(main())

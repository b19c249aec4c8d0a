"""Plot a saved `nnkernel bench --json` report, as `--plot` would have plotted it then.

    python bench/plot_json.py REPORT.json OUT.png

For the figures of bench/RESULTS.md: a run's plot, redrawn from its JSON file
without measuring anything again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from nnkernel.bench.report import plot  # noqa: E402


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python bench/plot_json.py REPORT.json OUT.png", file=sys.stderr)
        return 2
    plot(json.loads(Path(argv[0]).read_text())["rows"], argv[1])
    print(f"wrote {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

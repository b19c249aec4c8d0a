"""Developer sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s bench``.

PyTorch is a test and benchmark reference only, pinned to the CPU build that
this project's machines carry (an unpinned torch pulls a multi-GB CUDA build).
"""

import nox

TORCH = "torch==2.13.0"
nox.options.sessions = ["tests", "lint"]


@nox.session
def tests(session):
    session.install("-e", ".[test]", TORCH)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session):
    session.install("ruff")
    session.run("ruff", "check", "nnkernel", "tests", "bench", "examples", "noxfile.py")


@nox.session
def bench(session):
    """The pytest-benchmark suite (not part of the CI test run), then a quick scaling sweep."""
    session.install("-e", ".[test,bench]", TORCH)
    session.run("python", "-m", "pytest", "bench", "--benchmark-only",
                "--benchmark-json", "bench-results.json", *session.posargs)
    session.run("nnkernel", "bench", "--quick")

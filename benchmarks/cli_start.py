"""Start-up cost of `swiftdeploy --help` against a bare two-command Typer app, same interpreter, same run.

    .venv/bin/python benchmarks/cli_start.py [--runs 15]

Runs the two commands interleaved (so machine noise hits both alike), prints each median and the ratio
swiftdeploy / bare (target <= 1.15). When it is over, `python -X importtime -m swiftdeploy --help` shows what the
start imports; command modules must import only typer + stdlib at top level.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BARE_APP = '''
import typer

app = typer.Typer(add_completion=False)


@app.command()
def hello(name: str = "world") -> None:
    """Say hello."""
    typer.echo(f"hello {name}")


@app.command()
def bye() -> None:
    """Say bye."""
    typer.echo("bye")


if __name__ == "__main__":
    app()
'''


def _time(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each command (default 15)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "bare_app.py"
        bare.write_text(BARE_APP)
        script = Path(sys.executable).parent / "swiftdeploy"  # the console script people type
        ours = [str(script), "--help"] if script.exists() else [sys.executable, "-m", "swiftdeploy", "--help"]
        theirs = [sys.executable, str(bare), "--help"]
        for argv in (ours, theirs):  # warm the OS file cache and .pyc files once
            _time(argv)
        ours_t, theirs_t = [], []
        for _ in range(args.runs):
            ours_t.append(_time(ours))
            theirs_t.append(_time(theirs))
    ours_med, theirs_med = statistics.median(ours_t), statistics.median(theirs_t)
    ratio = ours_med / theirs_med
    print(f"python: {sys.executable}; swiftdeploy: {' '.join(ours)}")
    print(f"runs: {args.runs} each, interleaved")
    print(f"swiftdeploy --help   median {ours_med * 1000:7.1f} ms   (min {min(ours_t) * 1000:.1f} ms)")
    print(f"bare typer --help    median {theirs_med * 1000:7.1f} ms   (min {min(theirs_t) * 1000:.1f} ms)")
    print(f"ratio {ratio:.3f} (target <= 1.15): {'ok' if ratio <= 1.15 else 'OVER'}")


if __name__ == "__main__":
    main()

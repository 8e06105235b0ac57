"""Wall time of `algan --help` (and a subcommand's --help), each the median of several fresh processes.

Usage: python benchmarks/bench_cli.py [--repeats 5] [--sub train]

The command runs as `python -m algan.cli --help` from the repository root, so it times this checkout's
CLI (the installed `algan` script may point at another one). Prints one JSON line per command.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wall_time(argv: list[str]) -> float:
    """Seconds from start to exit of one fresh `python -m algan.cli ...` process."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "algan.cli", *argv], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sub", default="train", help="subcommand whose --help is timed too (default: train)")
    args = ap.parse_args()
    for argv in (["--help"], [args.sub, "--help"]):
        times = [wall_time(argv) for _ in range(args.repeats)]
        print(json.dumps({"command": "algan " + " ".join(argv), "median_s": round(statistics.median(times), 3),
                          "min_s": round(min(times), 3), "repeats": args.repeats}))


if __name__ == "__main__":
    main()

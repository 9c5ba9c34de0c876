"""Run one benchmark on two source trees, interleaved, and compare their medians.

Each round runs the benchmark command once with ``PYTHONPATH`` set to tree A, then once with
tree B (A, B, A, B...), so both see the same machine load over the same span of time. The
benchmark prints JSON lines; every numeric field of a line is a measure, keyed by the line's
``bench``, ``store`` and ``mode`` fields. The table gives each measure's median per tree
and the ratio B / A (for times: below 1 is faster).

Usage:
    python benchmarks/ab_trees.py --a /path/to/before/src --b src --rounds 3 -- \\
        python benchmarks/bench_hybrid_latency.py --docs 100000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections import defaultdict

KEYS = ("bench", "store", "mode")


def measures(stdout: str) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        label = tuple(str(row[k]) for k in KEYS if k in row)
        for field, value in row.items():
            if field in KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            out[(*label, field)] = float(value)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True, help="source tree A (the baseline)")
    ap.add_argument("--b", required=True, help="source tree B")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the benchmark command after --")
    runs: dict[str, dict[tuple[str, ...], list[float]]] = {"A": defaultdict(list),
                                                            "B": defaultdict(list)}
    for r in range(args.rounds):
        for name, tree in (("A", args.a), ("B", args.b)):
            env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), HF_HUB_OFFLINE="1")
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode:
                print(done.stdout[-2000:], done.stderr[-3000:], file=sys.stderr)
                return done.returncode
            for key, value in measures(done.stdout).items():
                runs[name][key].append(value)
            print(json.dumps({"round": r, "tree": name, "measures": len(measures(done.stdout))}),
                  file=sys.stderr, flush=True)
    print(f"\nA = {args.a}, B = {args.b}; {args.rounds} interleaved rounds; "
          f"`{' '.join(command)}`\n")
    print("| measure | A median | B median | B / A |\n|:--|--:|--:|--:|")
    for key in sorted(runs["A"]):
        a, b = runs["A"][key], runs["B"].get(key)
        if not b:
            continue
        ma, mb = statistics.median(a), statistics.median(b)
        ratio = f"{mb / ma:.3f}" if ma else "n/a"
        print(f"| {' / '.join(key)} | {ma:.4g} | {mb:.4g} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

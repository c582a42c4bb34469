"""Two versions of the daemon side by side: ``bench/cluster.py`` run alternately on a base
git ref and on the working tree.

    python bench/ab.py --base REF [--runs 3] [-- cluster.py arguments ...]

    e.g. python bench/ab.py --base HEAD~1 --runs 3 -- --rates 3000,6000 --seconds 20 --no-reference

The base is checked out into a temporary ``git worktree`` and its runs start *from inside
it*: the daemons are started as ``python -m emrp2p.cli.daemon``, and ``-m`` puts the
working directory ahead of PYTHONPATH on ``sys.path``, so pointing PYTHONPATH at another
tree leaves the daemons on the current code (an A/B made that way compares a version with
itself). Runs alternate base, head, base, head ... so that drift of the machine falls on
both. Each run's step lines are printed as they come; the last lines sum up, per side, the
peak (``cluster_tx_per_s``) and the half-peak p50 / p99 of every run.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHOWN = re.compile(r"^( {3}step| +peak|half-peak|ratio_vs|cluster_tx_per_s)")


def run_cluster(cwd: Path, args: list[str]) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "bench/cluster.py", *args], cwd=cwd, capture_output=True, text=True, timeout=1800
    )
    out: dict[str, float] = {}
    for line in proc.stdout.splitlines():
        if SHOWN.match(line):
            print("   ", line.strip(), flush=True)
        if line.startswith("half-peak"):
            m = re.search(r"p50=(\d+) ms p99=(\d+) ms", line)
            if m:
                out["p50"], out["p99"] = float(m[1]), float(m[2])
        elif line.startswith("cluster_tx_per_s="):
            out["peak"] = float(line.split("=", 1)[1])
    if proc.returncode != 0 or "peak" not in out:
        print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"cluster.py failed in {cwd} (exit {proc.returncode})")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="git ref of the version to compare against")
    p.add_argument("--runs", type=int, default=3, help="runs per side (alternated)")
    p.add_argument("cluster_args", nargs=argparse.REMAINDER, help="after --: arguments for cluster.py")
    a = p.parse_args()
    args = [x for x in a.cluster_args if x != "--"]
    base_rev = subprocess.run(
        ["git", "rev-parse", "--short", a.base], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    results: dict[str, list[dict[str, float]]] = {"base": [], "head": []}
    with tempfile.TemporaryDirectory(prefix="emrp2p-ab-") as tmp:
        tree = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), a.base], cwd=ROOT, check=True)
        try:
            for i in range(1, a.runs + 1):
                for side, cwd in (("base", tree), ("head", ROOT)):
                    print(f"== {side} ({base_rev if side == 'base' else 'working tree'}) run {i}", flush=True)
                    results[side].append(run_cluster(cwd, args))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    for side, runs in results.items():
        p50 = [r["p50"] for r in runs]
        print(
            f"{side}: peak {[round(r['peak']) for r in runs]} tx/s;"
            f" half-peak p50 {[round(x) for x in p50]} ms (median {statistics.median(p50):.0f}),"
            f" p99 {[round(r['p99']) for r in runs]} ms"
        )


if __name__ == "__main__":
    main()

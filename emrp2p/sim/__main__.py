"""``python -m emrp2p.sim check|run``: seeded fault-injection runs of the real ordering core.

check: many seeds, prints each failing seed with the command that replays it,
exits 1 on any violation; the last line is ``violations=<n> seeds=<n>``.
run: one seed, ``-v`` prints the readable event trace.
"""

from __future__ import annotations

import argparse
import sys
import time

from emrp2p.sim.run import run_many, run_seed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m emrp2p.sim")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("check", "run"):
        s = sub.add_parser(name)
        s.add_argument("--nodes", type=int, default=5)
        s.add_argument("--duration-ms", type=int, default=30_000)
        s.add_argument("--rate", type=float, default=20.0, help="offered load, tx/s")
        s.add_argument("--no-faults", action="store_true")
        if name == "check":
            s.add_argument("--seeds", type=int, default=100)
            s.add_argument("--seed-start", type=int, default=0)
            s.add_argument("--jobs", type=int, default=1, help="worker processes")
        else:
            s.add_argument("--seed", type=int, required=True)
            s.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    common = {"duration_ms": args.duration_ms, "rate_per_s": args.rate, "faults": not args.no_faults}
    if args.cmd == "run":
        r = run_seed(args.nodes, args.seed, trace=print if args.verbose else None, **common)
        for v in r.violations:
            print(f"VIOLATION: {v}")
        print(
            f"seed={r.seed} nodes={r.nodes} height={r.height} txs={r.committed_txs} "
            f"events={r.events} trace={r.trace_hash[:16]}"
        )
        print(f"violations={len(r.violations)} seeds=1")
        return 1 if r.violations else 0
    bad = 0
    t0 = time.monotonic()
    seeds = range(args.seed_start, args.seed_start + args.seeds)
    for r in run_many(args.nodes, seeds, jobs=args.jobs, **common):
        seed = r.seed
        if r.violations:
            bad += 1
            print(f"seed {seed}: {r.violations[0]} (+{len(r.violations) - 1} more)")
            print(
                f"  replay: python -m emrp2p.sim run --nodes {args.nodes} --seed {seed} "
                f"--duration-ms {args.duration_ms} -v"
            )
    print(f"{args.seeds} seeds of {args.nodes} validators in {time.monotonic() - t0:.1f}s")
    print(f"violations={bad} seeds={args.seeds}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

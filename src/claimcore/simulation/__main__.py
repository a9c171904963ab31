"""python -m claimcore.simulation --seeds 1-5 --minutes 2 [--cluster] [--json [PATH]]

Exit 0 when every seed passed every check, 1 on any violation."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections import Counter

from claimcore.simulation.checks import CHECKS
from claimcore.simulation.runner import run_seed


def parse_seeds(text: str) -> list[int]:
    """ "1-5", "3", "1,4,9-11"."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        seeds += list(range(int(lo), int(hi or lo) + 1))
    if not seeds:
        raise argparse.ArgumentTypeError("no seeds")
    return seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m claimcore.simulation", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seeds", type=parse_seeds, default=parse_seeds("1-3"), help="e.g. 1-5 or 1,4,9-11")
    parser.add_argument(
        "--minutes", type=float, default=2.0, help="load per seed (quiesce and checks come after)"
    )
    parser.add_argument(
        "--cluster", action="store_true", help="a Redis Cluster of 3 masters, not a plain Redis"
    )
    parser.add_argument("--nodes", type=int, default=3, help="front nodes (default 3)")
    parser.add_argument(
        "--stacked",
        action="store_true",
        help="the stacked-heavy mix: bigger stackable campaigns, 4x stacked orders, kills 2x",
    )
    parser.add_argument("--rate", type=float, default=25.0, help="client operations started per second")
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help="write a machine-readable summary to PATH (or stdout)",
    )
    parser.add_argument("--list-checks", action="store_true", help="print the checks and exit")
    args = parser.parse_args(argv)
    if args.list_checks:
        for name, what in CHECKS.items():
            print(f"{name:24} {what}")
        return 0
    # SIGTERM as Ctrl-C: the run is cancelled and stops its redis-servers and nodes on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    results = []
    for seed in args.seeds:
        result = asyncio.run(
            run_seed(seed, args.minutes, args.cluster, args.rate, args.nodes, stacked=args.stacked)
        )
        results.append(result)
        print(result.text, flush=True)
    violations: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    operations: Counter[str] = Counter()
    for r in results:
        violations.update(r.by_check())
        kinds.update(r.by_kind())
        operations.update(r.operations)
    failed = [r.seed for r in results if r.violations]
    print(
        f"{len(results)} seeds, {sum(operations.values())} operations, "
        f"{sum(r.calls for r in results)} calls; "
        f"violations: {dict(sorted(violations.items())) or 'none'}; failing seeds: {failed or 'none'}"
    )
    if args.json is not None:
        summary = {
            "seeds": [r.seed for r in results],
            "cluster": args.cluster,
            "minutes": args.minutes,
            "rate": args.rate,
            "nodes": args.nodes,
            "stacked": args.stacked,
            "operations": dict(sorted(operations.items())),
            "calls": sum(r.calls for r in results),
            "violations": dict(sorted(violations.items())),
            "violations_by_kind": dict(sorted(kinds.items())),
            "failing_seeds": failed,
            "per_seed": [r.summary() for r in results],
        }
        text = json.dumps(summary, indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

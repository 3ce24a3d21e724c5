"""Write the bundled held-out splits of the three synthetic benchmarks (what the demo and the tests evaluate).

python scripts/make_sample_data.py                           # all three under data/, 420 questions each
python scripts/make_sample_data.py --benchmark pope --n 60 --root /tmp/data --seed 7
"""

from __future__ import annotations

import argparse
from pathlib import Path

from himap_lmms.synthetic import BENCHMARKS, write_benchmark

REPO = Path(__file__).resolve().parent.parent
# One seed per benchmark; the testbed's training never uses these (himap_lmms/testbed/train.py).
SEEDS = {"scienceqa": 20250317, "pope": 20250318, "textvqa": 20250319}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=REPO / "data", help="folder the splits' folders go into")
    parser.add_argument("--benchmark", choices=list(BENCHMARKS), action="append", help="repeatable (default: all)")
    parser.add_argument("--n", type=int, default=420, help="questions per benchmark")
    parser.add_argument("--seed", type=int, default=None, help="one seed for all (default: each its own)")
    args = parser.parse_args()
    if args.n < 1:
        parser.error(f"--n {args.n} must be >= 1")
    for name in args.benchmark or list(BENCHMARKS):
        path = write_benchmark(name, args.root, args.n, SEEDS[name] if args.seed is None else args.seed)
        print(f"wrote {args.n} {name} questions to {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()

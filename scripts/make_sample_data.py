"""Write the bundled ScienceQA-IMG-schema dataset (the held-out split the demo and the tests evaluate).

python scripts/make_sample_data.py                        # data/scienceqa_img_synth, 400 test questions
python scripts/make_sample_data.py --out /tmp/sqa --split test=400 --split validation=200 --seed 7
"""

from __future__ import annotations

import argparse
from pathlib import Path

from himap_lmms.synthetic_data import write_dataset

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "data" / "scienceqa_img_synth")
    parser.add_argument("--split", action="append", default=None, help="NAME=COUNT, repeatable (default test=400)")
    parser.add_argument("--seed", type=int, default=20250317)
    parser.add_argument("--image-size", type=int, default=168)
    args = parser.parse_args()
    splits = {}
    for item in args.split or ["test=400"]:
        name, _, count = item.partition("=")
        if not count.isdigit():
            parser.error(f"--split {item!r} must look like NAME=COUNT")
        splits[name] = int(count)
    path = write_dataset(args.out, splits, args.seed, args.image_size)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(f"wrote {', '.join(f'{k}={v}' for k, v in splits.items())} to {path} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()

"""Train the testbed LLaVA from scratch on the three synthetic benchmarks (how, why: :mod:`himap_lmms.testbed.train`).

python scripts/train_testbed.py                   # ~54 min on 2 CPU cores; writes himap_lmms/testbed/llava-testbed
python scripts/train_testbed.py --steps 200 --out /tmp/testbed # a quick smoke run
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import fields

from himap_lmms.cli import output_directory
from himap_lmms.testbed import TESTBED_PATH
from himap_lmms.testbed.train import TrainSettings, train


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", type=output_directory, default=TESTBED_PATH, help="checkpoint directory (new or existing)"
    )
    for setting in fields(TrainSettings):
        option = "--" + setting.name.replace("_", "-")
        parser.add_argument(option, type=type(setting.default), default=setting.default, **setting.metadata)
    args = parser.parse_args(argv)
    try:
        settings = TrainSettings(**{setting.name: getattr(args, setting.name) for setting in fields(TrainSettings)})
    except ValueError as error:
        parser.error(str(error))
    train(settings, args.out)


if __name__ == "__main__":
    main()

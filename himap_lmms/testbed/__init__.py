"""The testbed LLaVA (trained by :mod:`himap_lmms.testbed.train`) and the held-out split it is evaluated on.

The checkpoint ships inside the package (``llava-testbed/``, safetensors, tokenizer and processor); the split
lies at the repository root (``data/scienceqa_img_synth``), so ``DATA_PATH`` assumes an editable install or
a checkout, which is how the demo and the tests run.
"""

from pathlib import Path

TESTBED_PATH = Path(__file__).resolve().parent / "llava-testbed"
DATA_PATH = Path(__file__).resolve().parents[2] / "data" / "scienceqa_img_synth"

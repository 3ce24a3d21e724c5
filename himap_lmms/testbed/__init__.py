"""The testbed LLaVA (trained by :mod:`himap_lmms.testbed.train`) and the held-out splits it is evaluated on.

The checkpoint ships inside the package (``llava-testbed/``, safetensors, tokenizer and processor); the splits
lie at the repository root (``data/``, one folder per benchmark, see :mod:`himap_lmms.synthetic`), so
``DATA_ROOT`` assumes an editable install or a checkout, which is how the demo and the tests run.
"""

from pathlib import Path

TESTBED_PATH = Path(__file__).resolve().parent / "llava-testbed"
DATA_ROOT = Path(__file__).resolve().parents[2] / "data"
DATA_PATH = DATA_ROOT / "scienceqa_img_synth"  # the ScienceQA split's directory, as the probes read it

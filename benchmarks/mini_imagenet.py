"""miniImageNet, the DFML papers' protocol: build the pool, train every recipe, one table.

    python benchmarks/mini_imagenet.py --scale small --data-root ../shared/data/mini-imagenet-sample  # proves the path (the sample is too small to learn)
    python benchmarks/mini_imagenet.py --scale paper --device cuda                  # the papers' sizes, for a GPU
    python benchmarks/mini_imagenet.py --scale cpu --threads 1 --data-root /data/mini-imagenet   # the CPU table (full miniImageNet)

Resumable: re-run the same command after an interruption. Presets: presets/mini_imagenet_<scale>.yaml.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from protocol import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main("mini_imagenet"))

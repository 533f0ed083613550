"""``python -m dfml`` is the ``dfml`` command (also under ``torchrun -m dfml``)."""

import sys

from .cli import main

sys.exit(main())

"""``python -m amortized``: the ``amortized`` command, also as ``torchrun ... -m amortized train``."""

import sys

from amortized.cli import main

sys.exit(main())

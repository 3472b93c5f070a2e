"""``python -m benchmarks.compare``: see :mod:`benchmarks.compare.command`."""

import sys

from benchmarks.compare.command import main

sys.exit(main())

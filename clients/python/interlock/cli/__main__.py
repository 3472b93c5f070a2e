"""``python -m interlock.cli``, the same as the ``interlock`` command."""

import sys

from interlock.cli import main

sys.exit(main())

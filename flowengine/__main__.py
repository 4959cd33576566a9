"""``python -m flowengine ARGS`` is ``flowengine ARGS``."""

import sys

from flowengine.cli import main

sys.exit(main())

"""``python -m distributord`` is ``distributord``."""

import sys

from distributord.cli import main

sys.exit(main())

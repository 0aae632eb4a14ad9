"""``python -m distributord`` is ``distributord``."""

import sys

from distributord.cli.main import main

sys.exit(main())

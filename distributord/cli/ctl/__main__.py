"""``python -m distributord.cli.ctl`` is ``distributorctl``."""

import sys

from distributord.cli.ctl import main

sys.exit(main())

"""`python -m traces ...`: see traces.cli."""

import sys

from traces.cli import main

sys.exit(main())

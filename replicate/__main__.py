"""`python -m replicate ...`: see replicate.cli."""

import sys

from replicate.cli import main

sys.exit(main())

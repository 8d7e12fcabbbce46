"""`python -m modalign ...`: the same as the `modalign` console script."""

import sys

from modalign.cli.main import main

sys.exit(main())

"""`python -m claimcore.dashboard`: the same as `claimcore dashboard`."""

import sys

from claimcore.dashboard import main

sys.exit(main())

"""`python -m claimcore.ops.dashboard`: the same as `claimcore dashboard`."""

import sys

from claimcore.ops.dashboard import main

sys.exit(main())

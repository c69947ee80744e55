"""`python -m mpp`: the `mpp` command."""

import sys

from mpp.cli.main import main

sys.exit(main())

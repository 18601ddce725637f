"""``python -m beckmann``."""

import sys

from beckmann.cli import main

sys.exit(main())

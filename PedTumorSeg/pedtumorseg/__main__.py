"""`python -m pedtumorseg ...` (how the Slicer module starts its background process)."""

import sys

from .cli import main

sys.exit(main())

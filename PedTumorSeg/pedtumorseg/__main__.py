"""`python -m pedtumorseg ...` (how the Slicer module starts its background process)."""

import sys

from pedtumorseg.cli import main

sys.exit(main())

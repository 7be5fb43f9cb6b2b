"""``python -m textdistill.data.augment ...``: the augment command without the main CLI."""

import sys

from textdistill.data.augment.cli import main

sys.exit(main())

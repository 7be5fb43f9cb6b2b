"""``python -m textdistill`` (also what ``accelerate launch -m textdistill`` runs)."""

import sys

from textdistill.cli import main

sys.exit(main())

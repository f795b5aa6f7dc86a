"""``python -m rrseg`` (also what ``torchrun -m rrseg`` runs)."""

import sys

from rrseg.cli.main import main

sys.exit(main())

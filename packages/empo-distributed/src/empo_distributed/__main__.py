"""``python -m empo_distributed`` runs the ``empo-prior`` CLI."""

import sys

from .cli import main

sys.exit(main())

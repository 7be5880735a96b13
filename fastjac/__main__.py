"""``python -m fastjac train``: see ``fastjac.cli``."""

from __future__ import annotations

import sys

from fastjac.cli import main

if __name__ == "__main__":
    sys.exit(main())

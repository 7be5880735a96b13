"""``python -m fastjac train``: see ``fastjac.cli``."""

import sys

from fastjac.cli import main

if __name__ == "__main__":
    sys.exit(main())

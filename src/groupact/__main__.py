"""``python -m groupact …`` is the ``groupact`` command."""

import sys

from groupact.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m fedpoison``: the same as the ``fedpoison`` command."""

import sys

from fedpoison.cli import main

sys.exit(main())

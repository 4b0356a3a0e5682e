"""``python -m butler_tw.cli``: the ``butler-tw`` command."""

import sys

from butler_tw.cli.main import main

sys.exit(main())

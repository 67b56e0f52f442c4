"""``python -m jingle ...``: the ``jingle`` command."""

import sys

from jingle.pipelines.cli import main

sys.exit(main())

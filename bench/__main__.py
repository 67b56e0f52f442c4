"""``python -m bench [--quick]`` (from the repository's root): every benchmark into bench/results.md."""

import sys

from bench.runner import main

sys.exit(main())

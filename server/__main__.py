"""``python -m framecast.server --model DIR --data DIR ...``: the same as ``framecast serve ...``."""

import sys

from framecast.server.cli import main

sys.exit(main())

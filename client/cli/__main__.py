"""``python -m framecast.client.cli ...``: the same as ``framecast ...``."""

import sys

from framecast.client.cli import main

sys.exit(main())

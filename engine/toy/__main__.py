"""``python -m framecast.engine.toy make-tiny-model DIR`` or ``... train-toy-model OUT_DIR ...``:
the same as ``framecast make-tiny-model`` and ``framecast train-toy-model``."""

import sys

from framecast.engine.toy.cli import main

sys.exit(main())

"""`python -m l2tpreorder` is the same as the `l2tpreorder` console script."""

import sys

from l2tpreorder.cli import main

sys.exit(main())

"""``python -m streamtags``: the command line."""

import sys

from streamtags.cli import main

sys.exit(main())

"""``python -m streamtags``: the command line."""

import sys

from streamtags.cli.main import main

sys.exit(main())

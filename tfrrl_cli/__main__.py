"""``python -m tfrrl_cli``: the ``tfrrl`` command."""

import sys

from tfrrl_cli.main import main

sys.exit(main())

"""``python -m gpcis`` is the ``gpcis`` command."""

import sys

from gpcis.cli import main

sys.exit(main())

"""``python -m jaxcompress.cli``: the same as the ``jaxcompress`` command."""

import sys

from jaxcompress.cli.main import main

sys.exit(main())

"""``python -m validator.pod``: start the GPU pod service."""

import sys

from validator.pod.server import main

sys.exit(main())

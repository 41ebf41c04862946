"""``python -m validator.pod``: start the GPU pod service (settings and wiring in ``validator.pod.settings``)."""

import sys

from validator.pod.settings import main

sys.exit(main())

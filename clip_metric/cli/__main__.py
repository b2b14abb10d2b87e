import sys

from clip_metric.cli import main

sys.exit(main())

import sys

from discomm_lite.cli import main

sys.exit(main())

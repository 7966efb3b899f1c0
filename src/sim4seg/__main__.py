import sys

from sim4seg.apps.cli import main

sys.exit(main())

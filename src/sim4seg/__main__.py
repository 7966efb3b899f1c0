import sys

from sim4seg.cli import main

sys.exit(main())

import sys

from jfbgym.cli import main

sys.exit(main())

import sys

from regexp.cli import main

sys.exit(main())

import sys

from cogames_parallel.cli import main

sys.exit(main())

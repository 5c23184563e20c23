import sys

from mlra.cli import main

sys.exit(main())

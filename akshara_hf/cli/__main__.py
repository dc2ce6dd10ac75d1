"""`python -m akshara_hf.cli ...` runs the command line."""

import sys

from akshara_hf.cli import main

sys.exit(main())

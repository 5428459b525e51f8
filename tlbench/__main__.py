"""`python -m tlbench` is the `tlbench` command."""
import sys

from tlbench.cli import main

sys.exit(main())

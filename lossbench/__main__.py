"""`python -m lossbench` runs the same command line as `lossbench`."""

from lossbench.cli import main

main()

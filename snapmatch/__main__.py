"""`python -m snapmatch`: the same as the `snapmatch` command."""

from snapmatch.cli import main

main()

"""``python -m speculabel``: the command line."""

from speculabel.cli import main

main()

"""``python -m speculabel.cli``: the command line."""

from speculabel.cli import main

main()

"""`python -m moncreneau`: the same as the `moncreneau` command."""

from moncreneau.cli import main

main()

"""`python -m moncreneau`: the same as the `moncreneau` command."""

from moncreneau.cli import main

if __name__ == "__main__":
    main()

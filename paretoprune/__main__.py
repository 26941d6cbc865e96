"""`python -m paretoprune` runs the command line."""

from paretoprune.cli import main

if __name__ == "__main__":
    main()

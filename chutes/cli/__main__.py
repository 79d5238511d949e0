"""`python -m chutes.cli`: the `chutes` command."""

from chutes.cli import main

if __name__ == "__main__":
    main()

"""`python -m tinyvision.cli`: the command line, as the `tinyvision` script runs it."""

from tinyvision.cli.app import main

if __name__ == "__main__":
    main()

"""Search a gallery from the command line (a client of the library, not an HTTP API).

The same command as `person-search`; its code is person/cli/search.py (`--help` for the options)."""
from person.cli.search import run

if __name__ == "__main__":
    run()

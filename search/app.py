"""Serve the search web page and its HTTP API over a gallery.

The same command as `person-serve`; its code is person/cli/serve.py (`--help` for the options)."""
from person.cli.serve import run

if __name__ == "__main__":
    run()

"""Run the built-in demo end to end: data, teacher store, students, export, galleries, search.

The same command as `person-demo`; its code is person/cli/demo.py (`--help` for the options)."""
from person.cli.demo import run

if __name__ == "__main__":
    run()

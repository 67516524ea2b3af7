"""Erase people from a gallery or an unlabeled training store (their rows' bytes leave the disk).

The same command as `person-forget`; its code is person/cli/forget.py (`--help` for the options)."""
from person.cli.forget import run

if __name__ == "__main__":
    run()

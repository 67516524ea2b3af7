"""Verify, show and prune a gallery's audit log (who searched for whom).

The same command as `person-audit`; its code is person/cli/audit.py (`--help` for the options)."""
from person.cli.audit import run

if __name__ == "__main__":
    run()

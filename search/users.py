"""Add, list and remove the accounts and API tokens of a gallery's search server.

The same command as `person-users`; its code is person/cli/users.py (`--help` for the options)."""
from person.cli.users import run

if __name__ == "__main__":
    run()

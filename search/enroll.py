"""Enrol images into a gallery with an exported student or a teacher.

The same command as `person-enroll`; its code is person/cli/enroll.py (`--help` for the options)."""
from person.cli.enroll import run

if __name__ == "__main__":
    run()

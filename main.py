"""Train the students against a teacher's feature store, on one process or under torchrun.

The same command as `person-train`; its code is person/cli/train.py (`--help` for the options)."""
from person.cli.train import run

if __name__ == "__main__":
    run()

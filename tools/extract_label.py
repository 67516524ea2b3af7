"""Extract the teacher's embeddings of every image and caption into the feature store.

The same command as `person-extract`; its code is person/cli/extract.py (`--help` for the options)."""
from person.cli.extract import run

if __name__ == "__main__":
    run()

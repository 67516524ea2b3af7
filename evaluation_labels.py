"""Evaluate the teacher's own cached embeddings (the upper bound the students chase).

The same command as `person-eval-labels`; its code is person/cli/evaluate_labels.py (`--help` for the options)."""
from person.cli.evaluate_labels import run

if __name__ == "__main__":
    run()

"""Evaluate a student checkpoint, or its ONNX export, on the held-out identities.

The same command as `person-eval`; its code is person/cli/evaluate.py (`--help` for the options)."""
from person.cli.evaluate import run

if __name__ == "__main__":
    run()

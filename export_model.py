"""Export a student checkpoint for devices: ONNX graphs, character table, card, parity.

The same command as `person-export`; its code is person/cli/export.py (`--help` for the options)."""
from person.cli.export import run

if __name__ == "__main__":
    run()

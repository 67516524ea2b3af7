"""Record the thresholds at FAR 1e-2 / 1e-3 / 1e-4 measured on your own labelled data (a calibration file).

The same command as `person-calibrate`; its code is person/cli/calibrate.py (`--help` for the options)."""
from person.cli.calibrate import run

if __name__ == "__main__":
    run()

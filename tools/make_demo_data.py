"""Draw a synthetic pedestrian set in a real dataset format.

The same command as `person-demo-data`; its code is person/cli/make_demo_data.py (`--help` for the options)."""
from person.cli.make_demo_data import run

if __name__ == "__main__":
    run()

"""Train the shipped demo teacher on synthetic pedestrians.

The same command as `person-demo-teacher`; its code is person/cli/train_demo_teacher.py (`--help` for the options)."""
from person.cli.train_demo_teacher import run

if __name__ == "__main__":
    run()

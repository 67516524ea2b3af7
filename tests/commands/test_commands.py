"""Every command ends bad input with `PROG: error: MESSAGE` (person.options.run_command), not a traceback."""
import subprocess
import sys
from pathlib import Path

import pytest

from person.data.images import ImageReadError
from person.options import run_command

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("error", [FileNotFoundError("x.json is not there: pass --data"),
                                   ValueError("--p must be >= 1"), ImageReadError("a.jpg: truncated")])
def test_bad_input_ends_with_the_message(error):
    def main():
        raise error

    with pytest.raises(SystemExit) as stop:
        run_command(main, "tool.py")
    assert stop.value.code == f"tool.py: error: {error}"


def test_other_errors_keep_their_traceback():
    def main():
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_command(main, "tool.py")


def test_a_command_reports_a_missing_file_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "evaluation_model.py"), str(tmp_path / "none.pt")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith("evaluation_model.py: error: ") and "Traceback" not in done.stderr
    assert "none.pt" in done.stderr

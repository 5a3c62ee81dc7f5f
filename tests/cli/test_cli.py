"""The ``jfbgym`` command: help everywhere, and bad input as one error line, not a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jfbgym.cli import COMMANDS, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"jfbgym {command}" in capsys.readouterr().out


def test_bad_input_is_one_error_line_naming_the_argument(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert main(["evaluate", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"jfbgym evaluate: error: {missing}:") and "Traceback" not in err
    assert err.count("\n") == 1 and "run directory" in err


@pytest.mark.parametrize("text", ["abc", "nan", "inf"])
def test_a_bad_number_flag_says_what_was_expected(text, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "LinearQuadratic-v0", "--cpu-minutes", text])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --cpu-minutes: expected a finite number, got '{text}'" in err


def test_module_entry_point_lists_commands():
    out = subprocess.run([sys.executable, "-m", "jfbgym", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert all(name in out for name in COMMANDS)

"""The command line's wiring: which module serves which command, and what a run loads."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from transfer.cli import COMMAND_MODULES, common_options, main

ROOT = Path(__file__).resolve().parent.parent


def _registered(module: str) -> set[str]:
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    importlib.import_module(module).register(subparsers, [common_options()])
    return set(subparsers.choices)


@pytest.mark.parametrize("module", sorted(COMMAND_MODULES))
def test_the_command_table_names_what_each_module_registers(module):
    assert _registered(module) == set(COMMAND_MODULES[module])


def test_a_run_loads_only_its_commands_module():
    probe = ("import sys\nfrom transfer.cli import main\n"
             "try:\n    main(['import', '--help'])\nexcept SystemExit:\n    pass\n"
             "print(' '.join(sorted(m for m in sys.modules if m.startswith('transfer.cli.'))))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    loaded = set(out.strip().splitlines()[-1].split())  # the last line, after import's --help
    assert "transfer.cli.import_cmd" in loaded
    assert not loaded & {"transfer.cli.interop", "transfer.cli.export_cmd", "transfer.cli.bundle"}


def test_an_unknown_command_lists_them_all(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["imprt", "x"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    for names in COMMAND_MODULES.values():
        for name in names:
            assert name in err

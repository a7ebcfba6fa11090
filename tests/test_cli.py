"""The command line's wiring: which module serves which command, and what a run loads."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from transfer.cli import COMMAND_HELP, COMMAND_MODULES, build_parser, common_options, main

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


def test_the_help_table_matches_the_modules_parsers():
    full = build_parser(load_all=True)
    subparsers = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    listed = {a.dest: a.help for a in subparsers._choices_actions}
    assert listed == COMMAND_HELP
    assert list(listed) == list(COMMAND_HELP)  # the order 'transfer --help' lists them
    assert build_parser().format_help() == full.format_help()


HEAVY = {"requests", "urllib3", "pydantic", "zstandard", "tqdm", "cryptography"}


def _loaded_by(*argv: str) -> set[str]:
    """The heavy modules a run of ``python -m transfer ARGV`` had loaded when it exited."""
    probe = ("import atexit, sys, runpy\n"
             f"atexit.register(lambda: print('LOADED', *sorted(set({sorted(HEAVY)!r}) & set(sys.modules)), file=sys.stderr))\n"
             f"sys.argv = ['transfer', *{list(argv)!r}]\n"
             "runpy.run_module('transfer', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    return set(done.stderr.strip().splitlines()[-1].split()) - {"LOADED"}


@pytest.mark.parametrize("argv", [["--version"], ["--help"], [], ["no-such-command"], ["--bogus"]])
def test_version_help_and_usage_errors_load_nothing_heavy(argv):
    assert _loaded_by(*argv) == set()


def test_ls_does_not_load_the_registry_client(tmp_path):
    loaded = _loaded_by("ls", str(tmp_path / "missing.bundle"))
    assert "requests" not in loaded and "urllib3" not in loaded
    assert "zstandard" in loaded  # the probe sees what a command loads


def test_a_registry_export_loads_no_import_archive_or_restore_code(tmp_path):
    """The start of an export (issue 16): what only other jobs use (the import and restore code,
    --from's layouts and tar archives, the credential helpers' subprocess) is not loaded by the
    time of its first connection (the probe stops the process there)."""
    other = {"transfer.import_", "transfer.interop", "transfer.docker_archive", "transfer.restore",
             "transfer.inventories", "transfer.bundle.verify", "tarfile", "subprocess", "transfer.registry.client"}
    argv = ["transfer", "export", "127.0.0.1:9/app:1", "-o", str(tmp_path / "b.bundle"), "-q"]
    probe = ("import os, runpy, socket, sys\n"
             "def connect(sock, address):\n"
             f"    print('LOADED', *sorted(set({sorted(other)!r}) & set(sys.modules)), flush=True)\n"
             "    os._exit(0)\n"
             "socket.socket.connect = connect\n"
             f"sys.argv = {argv!r}\n"
             "runpy.run_module('transfer', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    loaded = set(done.stdout.strip().splitlines()[-1].split()) - {"LOADED"}
    assert loaded == {"transfer.registry.client"}  # the probe sees what the export loaded


def test_pydantic_models_are_built_on_first_use():
    """Options, reports and models are declared with defer_build: a run builds the validators of
    the models it uses, not of every report of every job."""
    probe = ("import pydantic, transfer.options, transfer.reports, transfer.models\n"
             "mods = (transfer.options, transfer.reports, transfer.models)\n"
             "models = [m for mod in mods for m in vars(mod).values() if isinstance(m, type)\n"
             "          and issubclass(m, pydantic.BaseModel) and m.__module__ == mod.__name__]\n"
             "transfer.reports.ExportReport(bundle='b', complete=True)\n"
             "print(len(models), *sorted(m.__name__ for m in models if m.__pydantic_complete__))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) > 10
    assert "ExportReport" in out[1:] and "ImportReport" not in out[1:] and "ImportOptions" not in out[1:]
    assert not {"Deletion", "PruneReport", "TagDiff", "RemoteRepository"} & set(out[1:])


@pytest.mark.parametrize("command", sorted(COMMAND_HELP))
def test_a_commands_help_loads_nothing_heavy(command):
    """'transfer CMD --help' builds that command's parser only: the defaults and limits it shows
    come from transfer.limits, the options, reports, registry client and bundle code are imported
    where the command runs."""
    assert _loaded_by(command, "--help") == set()


def test_an_argument_error_of_a_command_loads_nothing_heavy():
    assert _loaded_by("export", "--jobs", "0", "-o", "x.bundle", "localhost:5000/a") == set()
    assert _loaded_by("import", "--chunk-size", "1k", "b.bundle", "localhost:5000") == set()


def test_the_limits_are_the_ones_the_code_uses():
    from transfer import limits, options
    from transfer.bundle import format as fmt
    from transfer.registry import settings, upload

    assert (options.DEFAULT_JOBS, options.DEFAULT_LOOKUPS) == (limits.DEFAULT_JOBS, limits.DEFAULT_LOOKUPS)
    assert fmt.MIN_SPLIT_SIZE == limits.MIN_SPLIT_SIZE and upload.CHUNK_SECONDS == limits.CHUNK_SECONDS
    assert settings.check_chunk_size is limits.check_chunk_size and settings.MIN_CHUNK_SIZE == limits.MIN_CHUNK_SIZE

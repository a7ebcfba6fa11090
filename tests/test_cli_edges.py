"""Careless command lines (issue 12, item 7): each is a usage error (exit 2) or a failure (exit 1)
in one line that names the value at fault, found before any work is done, and leaves nothing
behind."""

from __future__ import annotations

import os

import pytest

from tests.cli_helpers import run_cli
from transfer.bundle import BundleWriter
from transfer.docker_archive import DockerArchiveWriter
from transfer.errors import UsageError
from transfer.inventories import write_inventory

UNREACHABLE = "localhost:1/app:1"  # nothing listens: an option checked late fails on the connection


@pytest.mark.parametrize("option, value, says", [
    ("--jobs", "0", "'0' is too small (at least 1)"),
    ("--jobs", "-3", "'-3' is too small (at least 1)"),
    ("--jobs", "two", "'two' is not a whole number"),
    ("--threads", "-1", "'-1' is too small (at least 0)"),
    ("--split-size", "0", "split size '0' is too small"),
    ("--split-size", "0.5", "split size '0.5' is too small"),
    ("--split-size", "99999999999999999999999TB", "is too large (more than 1 EiB)"),
])
def test_bad_numbers_are_usage_errors(tmp_path, capsys, option, value, says):
    res = run_cli(capsys, "export", UNREACHABLE, "-o", tmp_path / "x.bundle", f"{option}={value}")
    assert res.code == 2, res.err
    assert says in res.err and "Connection refused" not in res.err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("command", [["export", "localhost:99999/app:1", "-o", "x.bundle"],
                                     ["inventory", "localhost:99999", "-o", "inv.json"],
                                     ["ls-remote", "localhost:99999"]])
def test_a_port_out_of_range_is_a_usage_error_naming_it(tmp_path, capsys, command):
    res = run_cli(capsys, *command)
    assert res.code == 2
    assert "invalid port 99999" in res.err and "Failed to parse" not in res.err


def test_output_paths_are_checked_by_the_library_and_named(tmp_path):
    folder = tmp_path / "dir"
    folder.mkdir()
    for make in (lambda p: BundleWriter(p), DockerArchiveWriter, lambda p: write_inventory({}, p)):
        with pytest.raises(UsageError, match=f"{folder}: is a directory"):
            make(folder)
        with pytest.raises(UsageError, match="the file name is empty"):
            make("")
        with pytest.raises(UsageError, match=f"folder {tmp_path / 'gone'} does not exist"):
            make(tmp_path / "gone" / "x")
    assert os.listdir(tmp_path) == ["dir"] and os.listdir(folder) == []  # no temporary file left


def test_inventory_into_a_directory_leaves_no_temporary_file(registry, tmp_path, capsys):
    res = run_cli(capsys, "inventory", registry.host, "-o", tmp_path)
    assert res.code == 2 and f"inventory {tmp_path}: is a directory" in res.err
    assert os.listdir(tmp_path) == []


def test_unpack_to_a_directory_fails_before_the_work(registry, tmp_path, capsys):
    app = registry.seeded["app"]
    bundle = tmp_path / "app.bundle"
    assert run_cli(capsys, "export", f"{registry.host}/{app.image}", "-o", bundle, "-q").code == 0
    folder = tmp_path / "out"
    folder.mkdir()
    res = run_cli(capsys, "unpack", bundle, "--docker-archive", folder, "--platform", "linux/amd64", "--json")
    assert res.code == 2 and f"docker archive {folder}: is a directory" in res.err, res.err
    assert os.listdir(folder) == [] and sorted(os.listdir(tmp_path)) == ["app.bundle", "out"]
    res = run_cli(capsys, "export", f"{registry.host}/{app.image}", "-o", folder)
    assert res.code == 2 and f"bundle {folder}: is a directory" in res.err

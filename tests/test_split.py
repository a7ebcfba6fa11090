"""Split bundles end to end: parts that each verify alone, imported into a real registry."""

from __future__ import annotations

import os

from tests.cli_helpers import run_cli


def test_split_export_verify_parts_and_import(registry, fresh_registry, skopeo, tmp_path, capsys):
    out = tmp_path / "site.bundle"
    res = run_cli(capsys, "export", "--catalog", registry.host, "--split-size", "256KiB", "-o", out)
    assert res.code == 0, res.err
    parts = sorted(p for p in os.listdir(tmp_path) if p.startswith("site.bundle."))
    assert len(parts) >= 3, parts
    assert all(os.path.getsize(tmp_path / p) <= 256 << 10 for p in parts)
    for part in parts:  # each part checks on its own
        res = run_cli(capsys, "verify", tmp_path / part)
        assert res.code == 0 and ": OK;" in res.out, res.out + res.err
    # Without part 2, part 1 still verifies, and the set says loudly that it is incomplete.
    os.rename(tmp_path / parts[1], tmp_path / "away")
    res = run_cli(capsys, "verify", tmp_path / parts[0])
    assert res.code == 0 and "INCOMPLETE" in res.out and "parts missing: 2" in res.out
    res = run_cli(capsys, "import", tmp_path / parts[0], fresh_registry().host)
    assert res.code == 1 and "incomplete" in res.err
    os.rename(tmp_path / "away", tmp_path / parts[1])
    dest = fresh_registry()
    res = run_cli(capsys, "import", tmp_path / parts[0], dest.host)
    assert res.code == 0, res.err
    for s in registry.seeded.values():
        assert skopeo.digest(dest, s.image) == s.manifest.digest

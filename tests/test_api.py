"""The public Python API (docs/api.md): its examples run as written against real registries, the
surface passes mypy --strict, and a library user gets typed reports and typed errors."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

import transfer
from tests.bed.images import Layout

ROOT = Path(__file__).resolve().parent.parent
API_DOC = ROOT / "docs" / "api.md"
PUBLIC = ["transfer/__init__.py", "transfer/api.py", "transfer/options.py", "transfer/reports.py",
          "transfer/progress.py", "transfer/errors.py", "transfer/store.py", "transfer/engine.py",
          "transfer/bundle/reader.py", "transfer/bundle/verify.py", "transfer/bundle/signing.py", "transfer/keys.py"]


def doc_examples() -> str:
    """Every ```python block of docs/api.md, in order, as one program."""
    return "\n\n".join(re.findall(r"```python\n(.*?)```", API_DOC.read_text(), re.S))


@pytest.fixture
def two_registries(fresh_registry, skopeo, tmp_path):
    """A source holding team/app:1.0 (OCI) and team/db:15 (Docker schema2), and an empty destination."""
    src, dst = fresh_registry(), fresh_registry()
    layout = Layout(tmp_path / "layout")
    app = layout.image("app", [120_000, 40_000], tag="app")
    db = layout.image("db", [60_000], docker=True, tag="db")
    layout.save()
    skopeo.seed(src, layout, app, "team/app", "1.0")
    skopeo.seed(src, layout, db, "team/db", "15")
    return src, dst, {"team/app:1.0": app, "team/db:15": db}


def test_the_examples_of_docs_api_run_against_real_registries(two_registries, skopeo, tmp_path, monkeypatch):
    src, dst, images = two_registries
    program = doc_examples().replace('"localhost:5000", "localhost:5001"', f'"{src.host}", "{dst.host}"')
    assert src.host in program, "the first example must name the two registries as the doc says"
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(program, str(API_DOC), "exec"), {"__name__": "docs_api"})
    printed = out.getvalue()
    assert "exported 2 images" in printed and "complete: True" in printed
    assert re.search(r"imported 2 images, 2 tags, [1-9]\d* bytes sent", printed)
    assert re.search(r"^(\d+) of \1 bytes$", printed, re.M), "the progress callback saw every byte"
    assert "not exported: " in printed and "1 exported, failed: ['team/gone:1.0']" in printed
    assert "username='ci'" in printed and "secret" not in printed
    assert "differs: [('mirror/teams/blue/app', 'stray', 'extra')]" in printed
    assert "would delete: [('mirror/teams/blue/app', ['stray'])]" in printed and "removed sha256:" in printed
    assert "signature checked: True" in printed and "refused, nothing pushed: " in printed
    assert "not among the 1 trusted key(s)" in printed and (tmp_path / "site.statement.sig").is_file()
    for ref, manifest in images.items():
        assert skopeo.digest(dst, f"mirror/teams/blue/{ref.removeprefix('team/')}") == manifest.digest
    assert skopeo.digest(dst, "copies/app:1.0") == images["team/app:1.0"].digest
    assert (tmp_path / "site-layout" / "index.json").is_file()
    assert "team/app:1.0 refused: unsigned: no cosign signature" in printed  # require_signed


def test_the_public_surface_and_the_doc_examples_pass_mypy_strict(tmp_path):
    examples = tmp_path / "api_examples.py"
    examples.write_text(doc_examples())
    res = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
                          "--cache-dir", str(tmp_path / "cache"), *PUBLIC, str(examples)],
                         cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (ROOT / "transfer" / "py.typed").is_file()


def test_import_options_and_typed_errors(two_registries, tmp_path):
    src, dst, images = two_registries
    bundle = str(tmp_path / "site.bundle")
    transfer.export([f"{src.host}/team/app:1.0"], bundle)
    first = transfer.import_bundle(bundle, dst.host)
    assert (first.images, first.tags_written, first.target) == (1, 1, dst.host)
    again = transfer.import_bundle(bundle, dst.host)
    assert (again.blobs_copied, again.manifests_copied, again.tags_written) == (0, 0, 0)
    # team/app:15 at the destination is the app image; the bundle's team/db:15 mapped onto
    # team/app conflicts: on_existing="fail" refuses before anything is pushed.
    transfer.copy(f"{src.host}/team/app:1.0", f"{dst.host}/team/app:15")
    other = str(tmp_path / "db.bundle")
    transfer.export([f"{src.host}/team/db:15"], other)
    with pytest.raises(transfer.TransferError, match="already points at"):
        transfer.import_bundle(other, dst.host, options=transfer.ImportOptions(map=["team/db=team/app"],
                                                                                on_existing="fail"))
    assert transfer.import_plan(bundle, dst.host).blobs_to_push == 0
    with pytest.raises(transfer.UsageError):
        transfer.import_bundle(bundle, dst.host, access=transfer.RegistryAccess(username="only-a-name"))
    (tmp_path / "junk.bundle").write_bytes(b"not a bundle at all" * 100)
    with pytest.raises(transfer.BundleError, match="junk.bundle"):
        transfer.open_bundle(str(tmp_path / "junk.bundle"))


def test_cli_json_is_the_report(two_registries, tmp_path, capsys):
    from tests.cli_helpers import run_cli

    src, dst, _ = two_registries
    res = run_cli(capsys, "export", f"{src.host}/team/app:1.0", "-o", tmp_path / "a.bundle", "--json")
    assert res.code == 0, res.err
    cli = res.json()
    api = transfer.export([f"{src.host}/team/app:1.0"], str(tmp_path / "b.bundle")).model_dump(mode="json")
    assert set(cli) == set(api) and cli["images"] == api["images"] == 1


def test_every_public_name_resolves_and_every_error_is_in_the_tree():
    import transfer.errors

    for name in transfer.__all__:
        assert getattr(transfer, name) is not None, name
    errors = {n for n, o in vars(transfer.errors).items() if isinstance(o, type) and issubclass(o, Exception)}
    assert errors <= set(transfer.__all__), errors - set(transfer.__all__)
    tree = API_DOC.read_text().split("The whole tree", 1)[1].split("## ", 1)[0]
    assert [n for n in errors if not re.search(rf"(^|[ ─]){n} ", tree, re.M)] == []

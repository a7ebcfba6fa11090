"""The progress renderers the CLI draws (tqdm on a terminal, plain lines otherwise)."""

import io

from transfer.cli.progress import LineProgress, TqdmProgress


def drive(progress, size=8 << 20):
    progress.planned("sha256:" + "a" * 64, size)
    progress.started("sha256:" + "a" * 64)
    progress.advance("sha256:" + "a" * 64, size // 2)
    progress.advance("sha256:" + "a" * 64, -(size // 4))  # a restarted blob takes back its bytes
    progress.advance("sha256:" + "a" * 64, size - size // 4)
    progress.message("a note for the user")
    progress.finished("sha256:" + "a" * 64)
    progress.close()


def test_tqdm_bars_reach_the_total():
    out = io.StringIO()
    drive(TqdmProgress("export", stream=out))
    text = out.getvalue()
    assert "export: 100%" in text and "8.00M/8.00M" in text and "a note for the user" in text


def test_plain_lines_for_logs():
    out = io.StringIO()
    drive(LineProgress("import", stream=out, interval=0))
    lines = out.getvalue().splitlines()
    assert "a note for the user" in lines
    assert lines[-1].startswith("import: 8 MiB of 8 MiB")




def test_planning_counts_images_as_it_goes():
    out = io.StringIO()
    bar = TqdmProgress("export", stream=out)
    bar.images(1000, 250)
    bar.close()
    assert "export (250/1000 images planned)" in out.getvalue()
    out = io.StringIO()
    lines = LineProgress("export", stream=out, interval=0)
    lines.images(10000, 0)
    assert "export: 10000 images found, 0 planned" in out.getvalue()

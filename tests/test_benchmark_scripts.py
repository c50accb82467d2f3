"""Benchmark scripts that draw docs figures, on tiny run folders written here."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run_folder(path: Path, masks: list[list[int]] | None, epochs: int = 0) -> Path:
    """A run folder whose training log has one record per epoch: with these masks, or
    ``epochs`` records of a run without a learned mask (masks None)."""
    path.mkdir()
    rows = ([{"epoch": i + 1, "step": 3 * (i + 1), "mask": m, "mask_fraction": sum(m) / len(m)}
             for i, m in enumerate(masks)] if masks is not None
            else [{"epoch": i + 1, "step": 3 * (i + 1), "train_loss": 1.0}
                  for i in range(epochs)])
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_mask_history_joins_the_stages_of_a_model_in_order(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import mask_history
    finally:
        sys.path.pop(0)
    first = _run_folder(tmp_path / "a", [[1, 1, 0], [1, 0, 0]])
    second = _run_folder(tmp_path / "b", [[0, 0, 1]])
    rows = mask_history.joined([first, second])
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["mask"] for r in rows] == [[1, 1, 0], [1, 0, 0], [0, 0, 1]]
    out = tmp_path / "mask.png"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "mask_history.py"),
                           str(first), str(second), "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "3 epochs" in done.stdout and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = _run_folder(tmp_path / "fixed-mask", None, epochs=2)
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "mask_history.py"),
                           str(empty), "--out", str(tmp_path / "none.png")],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "no epoch with a learned mask" in done.stderr
    assert not (tmp_path / "none.png").exists()

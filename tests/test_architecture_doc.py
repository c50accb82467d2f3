"""docs/ARCHITECTURE.md's new-group example is whole: run as written, it registers a group that
passes the group laws and the image-action laws, and a recipe can train with it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md"


def test_the_new_group_example_runs_and_passes_the_laws(tmp_path):
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"\*\*A group\*\*.*?```python\n(.*?)```", text, re.S).group(1)
    check = block + """
from groupact import laws
from groupact.build import group_from_config
from groupact.config import load_config
from groupact.latent import build_action

group = group_from_config(load_config("rotmnist-c4", ["group.name=c2"]))
laws.check_group(group)
laws.check_image_action(group)
action = build_action("spatial", group)
laws.check_action(group, action, fibre_shape=(7, 7))
print("ok", group.name)
"""
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok c2"

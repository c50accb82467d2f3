"""docs/ARCHITECTURE.md's examples are whole: run as written, the new group passes the group laws
and the image-action laws, the new action passes the latent-action laws, and a recipe builds
and trains one step with the new group, action, network and dataset together."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md"


def _block(text: str, heading: str) -> str:
    return re.search(rf"\*\*{heading}\*\*.*?```python\n(.*?)```", text, re.S).group(1)


def test_the_extension_examples_run_and_pass_the_laws(tmp_path):
    text = DOC.read_text(encoding="utf-8")
    blocks = [_block(text, h) for h in ("A group", "An action", "A network", "A dataset")]
    check = "\n".join(blocks) + """
import torch
from groupact import laws
from groupact.build import group_from_config, model_from_config
from groupact.config import load_config
from groupact.data import build_pair_source, load_data
from groupact.latent import build_action
from groupact.losses import LossWeights, paper_loss

group = group_from_config(load_config("rotmnist-c4", ["group.name=c2"]))
checked = laws.check_all(group)
assert {"action:spatial", "action:matrix", "action:learned", "action:sign"} <= set(checked)
assert "centroid_follows_matrix" in checked["image_action"]
sign = build_action("sign", group)
z = torch.randn(5, 4, 3)
g = group.sample(5, torch.Generator().manual_seed(0))
assert torch.allclose(sign.invariants(sign(z, g)), sign.invariants(z))

cfg = load_config("rotmnist-c4", ["group.name=c2", "model.action.kind=sign", "model.net=tiny2d",
                                  "model.channels=8", "data.kind=squares"])
splits = load_data(cfg.data)
model = model_from_config(cfg, splits.image_shape)
assert model.latent_shape == (8, 7, 7), model.latent_shape
pairs = build_pair_source(cfg, model.group, splits)
batch = pairs.pairs(splits.train, torch.arange(16), torch.Generator().manual_seed(0))
total, parts = paper_loss(model, batch, LossWeights())
total.backward()
assert torch.isfinite(total) and model.mask.logits.grad is not None
print("ok", group.name, len(splits.train))
"""
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok c2 64"

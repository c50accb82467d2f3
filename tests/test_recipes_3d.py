"""Every 3D / contrast recipe trains and evaluates end to end on a few generated items."""

import json

import pytest
import torch

from groupact.config import load_config
from groupact.evaluate.evaluate import evaluate_run
from groupact.train import train_run

TINY = {
    "adrenal3d-so3": ["data.n_train=24", "data.n_val=8", "data.n_test=8"],
    "brain3d-so3": ["data.n_train=16", "data.n_val=4", "data.n_test=4"],
    "brain-contrast": ["data.n_train=16", "data.n_val=4", "data.n_test=4", "data.size=32"],
    "planes-so3": ["data.n_items=6", "data.n_poses=4", "data.size=32"],
    "planes-so3-matrix": ["data.n_items=6", "data.n_poses=4", "data.size=32"],
}


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GROUPACT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.mark.parametrize("recipe", sorted(TINY))
def test_recipe_runs_end_to_end(recipe, tmp_path):
    cfg = load_config(recipe, TINY[recipe] + ["train.epochs=1", "train.batch_size=8",
                                               "train.progress=false", "eval.probe_c=[0.01]"])
    trainer = train_run(cfg, tmp_path / "run", log=lambda *_: None)
    m = evaluate_run(tmp_path / "run", log=lambda *_: None)
    assert m["stand_in_data"] is True
    assert m["n_pairs"] > 0 and m["psnr"] == m["psnr"]  # finite, not NaN
    figs = set(m["figures"])
    assert {"reconstructions.png", "latent_maps.png", "swap.png"} <= figs
    saved = json.loads((tmp_path / "run" / "data.json").read_text())
    assert saved["stand_in"] is True
    x = trainer.splits.test.images[:2]
    if recipe.startswith("planes"):
        assert trainer.splits.image_shape[0] == 3  # RGBA stored, RGB composites seen
        # the planes protocol: object and background pixels apart, the wrong-g cost, the swap
        for key in ("psnr_object", "psnr_background", "psnr_object_identity",
                    "psnr_object_mean_target", "psnr_object_wrong_g", "swap_psnr"):
            assert m[key] == m[key], key
        assert m["wrong_g_cost"] == pytest.approx(m["psnr"] - m["psnr_wrong_g"])
    else:
        assert tuple(x.shape[1:]) == trainer.splits.image_shape


def test_a_planes_run_from_before_stratify_is_refused_by_its_fingerprint(tmp_path):
    """A 0.4.0 planes run (random plane cut; no `data.stratify` in its config.yaml or in its
    checkpoints) reads as the stratified default: its split fingerprint refuses evaluating and
    resuming it, with a one-line error, instead of training or scoring on other data. With
    `data.stratify: false` written into its config.yaml it evaluates on its own split."""
    import yaml
    from groupact.errors import CheckpointError
    from groupact.io import load_checkpoint, save_checkpoint
    from groupact.train import resume_config
    run = tmp_path / "run"
    cfg = load_config("planes-so3", TINY["planes-so3"] + [
        "data.stratify=false", "train.epochs=1", "train.batch_size=8", "train.progress=false",
        "eval.probe_c=[0.01]"])
    train_run(cfg, run, log=lambda *_: None)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    del saved["data"]["stratify"]                                # as 0.4.0 wrote it
    (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    for pt in (run / "checkpoints").glob("*.pt"):
        state = load_checkpoint(pt)
        del state["config"]["data"]["stratify"]
        save_checkpoint(pt, state)
    with pytest.raises(CheckpointError, match="split fingerprint"):
        evaluate_run(run, log=lambda *_: None)
    again = resume_config(run, overrides=["train.epochs=2"])
    assert again.data.stratify is True
    with pytest.raises(CheckpointError, match="split fingerprint"):
        train_run(again, run, resume=True, log=lambda *_: None)
    saved["data"]["stratify"] = False
    (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    m = evaluate_run(run, log=lambda *_: None)
    assert m["n_pairs"] > 0 and m["psnr"] == m["psnr"]


def test_cube_latent_action_is_exact_through_a_3d_model():
    """With the cube group, acting on the latent of a volume is exact: Φ_a Φ_b = Φ_ab."""
    cfg = load_config("adrenal3d-so3", ["group.name=cube"])
    from groupact.build import model_from_config
    model = model_from_config(cfg, (1, 28, 28, 28))
    x = torch.rand(4, 1, 28, 28, 28)
    z = model.encode(x)
    a, b = model.group.sample(4), model.group.sample(4)
    assert torch.equal(model.act(model.act(z, b), a), model.act(z, model.group.compose(a, b)))

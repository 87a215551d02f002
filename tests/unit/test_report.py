"""The Table-3 report reads each job's overrides; spellings of one value must not split rows."""

from __future__ import annotations

from fadm_lightning.evaluation.report import _overrides


def test_overrides_show_booleans_one_way_and_skip_infrastructure(tmp_path):
    path = tmp_path / "overrides.yaml"
    path.write_text(
        "- model.agcn.use_appearance=false\n"
        "- model.agcn.use_motion_weighting=TRUE\n"
        "- ++trainer.max_steps=235\n"
        "- hydra.run.dir=somewhere\n"
        "- model.agcn.alpha=0.3\n"
    )
    out = _overrides(path, skip=("hydra.", "trainer."))
    assert out == {
        "model.agcn.use_appearance": "False",
        "model.agcn.use_motion_weighting": "True",
        "model.agcn.alpha": "0.3",
    }
    assert _overrides(tmp_path / "missing.yaml", skip=()) == {}

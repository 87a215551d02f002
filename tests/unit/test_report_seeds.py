"""The training-multirun report: Table 3 rows as mean ± std over seeds."""

import json

import pytest

from fadm_lightning.evaluation.report import gather


def _job(root, name, overrides, refined_psnr, coarse_psnr=25.0):
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    metrics = {
        "test/l1_coarse": 0.045,
        "test/psnr_coarse": coarse_psnr,
        "test/ssim_coarse": 0.9,
        "test/l1_refined": 0.02,
        "test/psnr_refined": refined_psnr,
        "test/ssim_refined": 0.92,
    }
    (job / "test_metrics.json").write_text(json.dumps(metrics))


def test_seed_table_groups_runs_by_variant_and_reports_mean_and_std(tmp_path):
    for i, (ablation, seed, psnr) in enumerate(
        [("true", 1, 30.0), ("true", 2, 32.0), ("false", 1, 28.0), ("false", 2, 29.0)]
    ):
        _job(
            tmp_path,
            str(i),
            [f"model.agcn.use_appearance={ablation}", f"seed={seed}", "num_threads=1"],
            psnr,
        )
    paths = gather(tmp_path)
    text = paths["markdown"].read_text()
    lines = {
        line.split(" | ")[0].lstrip("| "): line
        for line in text.splitlines()
        if line.startswith("| ")
    }
    assert "31.00 ± 1.41" in lines["full model"]  # mean 31, sample std √2
    assert "28.50 ± 0.71" in lines["w/o color condition"]
    assert "25.00 ± 0.00" in lines["coarse generator"] and "| 4 |" in lines["coarse generator"]
    assert "| 2 |" in lines["full model"]
    rows = paths["csv"].read_text().splitlines()
    assert rows[0].startswith("variant,runs,l1_mean,l1_std,psnr_mean")
    assert len(rows) == 4


def test_report_without_any_result_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="test_metrics.json"):
        gather(tmp_path)

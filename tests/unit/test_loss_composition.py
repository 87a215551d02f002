"""How ``FADMLitModule.model_step`` puts the training loss together (eq. 11 + λ·L_color).

loss = loss_eps + λ·L_color, where loss_eps compares the UNet's output with the noise ε the
forward process drew (both presets here predict ε of the frame: ``prediction_type=epsilon``,
``target=image``):

* paper preset (``model=fadm``): loss_eps = mean squared error (eq. 11);
* official preset (``model=fadm_official``): loss_eps = Σ|output − ε| (``diffusion_loss: l1_sum``);
* ``color_loss_weight=0``: loss = loss_eps (L_color is still reported);
* ``model.agcn.use_appearance=false`` (Table 3, w/o color condition): no L_color at all.

The UNet's output, the noise (``torch.randn_like``) and the AGCN's L_color are recorded as the
step runs, and the expected loss is recomputed from them by hand (float64 model, so that the
λ·L_color term is far above the rounding of a 6 000-term L1 sum). The frozen parts are not
under test: ``prepare`` returns a fixed coarse frame and attribute difference.
"""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

BATCH, SIZE = 2, 32


def build(compose_train, *overrides: str):
    cfg = compose_train("model/unet=small", *overrides)
    coarse, attributes = instantiate(cfg.coarse), instantiate(cfg.attributes)
    model = instantiate(cfg.model, coarse=coarse, attributes=attributes).double()
    assert model.pipeline.prediction_type == "epsilon" and cfg.model.target == "image"
    assert model.hparams.snr_gamma is None
    return model, cfg


def run_step(model, monkeypatch, seed: int = 0) -> tuple[dict, dict]:
    """``model.model_step`` on a fixed batch; returns its output and what was recorded."""
    seen: dict[str, list] = {"output": [], "noise": [], "color": []}

    unet_forward = model.unet.forward

    def unet(*args, **kwargs):
        result = unet_forward(*args, **kwargs)
        seen["output"].append(result.sample.detach().clone())
        return result

    agcn_forward = model.agcn.forward

    def agcn(*args, **kwargs):
        condition, color = agcn_forward(*args, **kwargs)
        seen["color"].append(None if color is None else color.detach().clone())
        return condition, color

    randn_like = torch.randn_like

    def noise_like(x, *args, **kwargs):
        noise = randn_like(x, *args, **kwargs)
        seen["noise"].append(noise.detach().clone())
        return noise

    monkeypatch.setattr(model.unet, "forward", unet)
    monkeypatch.setattr(model.agcn, "forward", agcn)
    monkeypatch.setattr(torch, "randn_like", noise_like)

    generator = torch.Generator().manual_seed(1234)
    driving = torch.rand(BATCH, 3, SIZE, SIZE, generator=generator, dtype=torch.float64)
    source = torch.rand(BATCH, 3, SIZE, SIZE, generator=generator, dtype=torch.float64)
    # a coarse frame unlike the driving one (so that L_color is far from 0)
    coarse = (0.6 * driving.roll(3, dims=-1) + 0.2).clamp(0, 1)
    attr_diff = 0.1 * torch.randn(BATCH, model.attributes.dim, generator=generator).double()
    monkeypatch.setattr(model.pipeline, "prepare", lambda s, d, *a, **k: (coarse, attr_diff, None))

    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.model_step({"source": source, "driving": driving})
    assert len(seen["output"]) == 1 and len(seen["noise"]) == 1 and len(seen["color"]) == 1
    recorded = {k: v[0] for k, v in seen.items()}
    assert recorded["noise"].shape == recorded["output"].shape == driving.shape
    return out, recorded


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=1e-10, atol=0)


def test_paper_preset_loss_is_mse_on_epsilon_plus_weighted_color(compose_train, monkeypatch):
    model, _ = build(compose_train, "model=fadm", "model.color_loss_weight=0.37")
    out, seen = run_step(model, monkeypatch)
    output, noise, color = seen["output"], seen["noise"], seen["color"]
    assert color is not None and float(color) > 1e-3
    loss_eps = ((output - noise) ** 2).mean()
    close(out["loss_eps"], loss_eps)
    close(out["loss_color"], color)
    close(out["loss"], loss_eps + 0.37 * color)
    # the color term is not lost in the rounding: leaving it out, or λ = 1, would fail above
    assert 0.37 * float(color) > 1e-6 * float(out["loss"])


def test_official_preset_loss_is_l1_sum_on_epsilon_plus_weighted_color(compose_train, monkeypatch):
    model, cfg = build(compose_train, "model=fadm_official", "model.color_loss_weight=2.5")
    assert cfg.model.diffusion_loss == "l1_sum"
    out, seen = run_step(model, monkeypatch)
    output, noise, color = seen["output"], seen["noise"], seen["color"]
    assert color is not None and float(color) > 1e-3
    loss_eps = (output - noise).abs().sum()  # a sum over B×3×H×W, not a mean
    close(out["loss_eps"], loss_eps)
    close(out["loss_color"], color)
    close(out["loss"], loss_eps + 2.5 * color)
    assert float(out["loss_eps"]) > 0.1 * output.numel()  # the sum, not the mean


def test_zero_color_weight_leaves_loss_eps(compose_train, monkeypatch):
    model, _ = build(compose_train, "model=fadm", "model.color_loss_weight=0")
    out, seen = run_step(model, monkeypatch)
    assert float(seen["color"]) > 1e-3  # L_color is computed and reported, with weight 0
    close(out["loss_color"], seen["color"])
    close(out["loss_eps"], ((seen["output"] - seen["noise"]) ** 2).mean())
    close(out["loss"], out["loss_eps"])


def test_without_appearance_there_is_no_color_loss(compose_train, monkeypatch):
    model, _ = build(
        compose_train,
        "model=fadm",
        "model.color_loss_weight=0.37",
        "model.agcn.use_appearance=false",
    )
    out, seen = run_step(model, monkeypatch)
    assert seen["color"] is None and "loss_color" not in out
    loss_eps = ((seen["output"] - seen["noise"]) ** 2).mean()
    close(out["loss_eps"], loss_eps)
    close(out["loss"], loss_eps)


@pytest.mark.parametrize("preset", ["fadm", "fadm_official"])
def test_the_step_is_reproducible_under_a_fixed_seed(compose_train, monkeypatch, preset):
    model, _ = build(compose_train, f"model={preset}")
    first, seen_first = run_step(model, monkeypatch, seed=5)
    monkeypatch.undo()
    second, seen_second = run_step(model, monkeypatch, seed=5)
    assert torch.equal(seen_first["noise"], seen_second["noise"])
    assert torch.equal(first["loss"], second["loss"])
    monkeypatch.undo()
    other, seen_other = run_step(model, monkeypatch, seed=6)
    assert not torch.equal(seen_first["noise"], seen_other["noise"])
    assert not torch.equal(first["loss"], other["loss"])

import math

import pytest
import torch

from fadm_lightning.models.agcn import AGCN, level_weights


def tiny_agcn(**kwargs) -> AGCN:
    args = dict(
        attr_dim=11, feature_channels=8, hidden_channels=16, time_embed_dim=16, norm_groups=4
    )
    args.update(kwargs)
    return AGCN(**args)


def test_eq10_level_weights_values():
    w = torch.tensor([[0.8]])
    alpha = 0.3
    weights = level_weights(w, num_levels=3, alpha=alpha)
    up, down = math.exp(0.8 - alpha), math.exp(-0.8 + alpha)
    expected = [up, 0.5 * up + 0.5 * down, down]
    for got, want in zip(weights, expected, strict=True):
        assert got.item() == pytest.approx(want, rel=1e-6)
    # w = α gives equal weights of 1 at every level
    for got in level_weights(torch.full((2, 4), 0.25), num_levels=3, alpha=0.25):
        torch.testing.assert_close(got, torch.ones(2, 4))
    with pytest.raises(ValueError, match="at least 2 levels"):
        level_weights(w, num_levels=1)


@pytest.mark.parametrize("size", [32, 64, 96])
def test_agcn_shapes_at_several_resolutions(size):
    agcn = tiny_agcn()
    coarse, driving = torch.rand(2, 3, size, size), torch.rand(2, 3, size, size)
    cond, color = agcn(coarse, torch.randn(2, 11), torch.tensor([3, 70]), driving=driving)
    assert cond.shape == (2, 3, size, size)
    assert 0 <= cond.min() and cond.max() <= 1
    assert color is not None and color.ndim == 0
    levels = agcn.levels(coarse)
    assert [lv.shape[-1] for lv in levels] == [size] * 3
    # g_i carry H/8, H/4, H/2 detail: the number of distinct columns grows with the level
    distinct = [torch.unique(lv[0, 0, 0]).numel() for lv in levels]
    assert distinct[0] <= size // 8 and distinct[1] <= size // 4 and distinct[2] <= size // 2


def test_color_loss_only_with_driving_frame():
    agcn = tiny_agcn()
    coarse = torch.rand(2, 3, 32, 32)
    _, color_train = agcn(
        coarse, torch.randn(2, 11), torch.tensor([5, 5]), driving=torch.rand(2, 3, 32, 32)
    )
    _, color_infer = agcn(coarse, torch.randn(2, 11), torch.tensor([5, 5]))
    assert color_train is not None and color_train > 0
    assert color_infer is None


def _outputs(agcn, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse, driving = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    attr = torch.randn(2, 11, generator=g)
    return agcn(coarse, attr, torch.tensor([10, 90]), driving=driving), (coarse, attr)


def test_ablation_switches_change_the_computation():
    torch.manual_seed(0)
    base = tiny_agcn()
    state = base.state_dict()
    (cond, color), (coarse, attr) = _outputs(base)

    no_app = tiny_agcn(use_appearance=False)
    no_app.load_state_dict(state)
    (cond_na, color_na), _ = _outputs(no_app)
    assert color_na is None
    assert not torch.allclose(cond, cond_na)
    # without the appearance input, the driving frame no longer matters
    c1 = no_app(coarse, attr, torch.tensor([10, 90]), driving=torch.rand(2, 3, 32, 32))[0]
    c2 = no_app(coarse, attr, torch.tensor([10, 90]), driving=torch.rand(2, 3, 32, 32))[0]
    torch.testing.assert_close(c1, c2)

    no_motion = tiny_agcn(use_motion_weighting=False)
    missing = no_motion.load_state_dict(state, strict=False)
    assert (
        all(k.startswith("motion_mlp.") for k in missing.unexpected_keys)
        and missing.unexpected_keys
    )
    (cond_nm, _), _ = _outputs(no_motion)
    assert not torch.allclose(cond, cond_nm)
    # without motion weighting, the attributes no longer matter
    d = torch.rand(2, 3, 32, 32)
    a1 = no_motion(coarse, torch.randn(2, 11), torch.tensor([10, 90]), driving=d)[0]
    a2 = no_motion(coarse, torch.randn(2, 11), torch.tensor([10, 90]), driving=d)[0]
    torch.testing.assert_close(a1, a2)
    # ... while with it they do
    b1 = base(coarse, torch.randn(2, 11), torch.tensor([10, 90]), driving=d)[0]
    b2 = base(coarse, torch.randn(2, 11) * 3, torch.tensor([10, 90]), driving=d)[0]
    assert not torch.allclose(b1, b2)


def test_official_switches():
    agcn = tiny_agcn(
        weight_dim=8,
        attr_residual=0.4,
        official_fusion=True,
        time_in_condition=False,
        color_loss="l1",
    )
    (cond, color), _ = _outputs(agcn)
    assert cond.shape == (2, 3, 32, 32) and color > 0
    with pytest.raises(ValueError, match="weight_dim"):
        tiny_agcn(weight_dim=3)
    with pytest.raises(ValueError, match="color_loss"):
        tiny_agcn(color_loss="huber")


def test_wrong_attribute_size_is_a_clear_error():
    agcn = tiny_agcn()
    with pytest.raises(ValueError, match="expects 11"):
        agcn(torch.rand(1, 3, 32, 32), torch.randn(1, 56), torch.tensor([1]))

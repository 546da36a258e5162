"""Generator / discriminator: shapes per config, parameter counts, equalized LR, progress blending."""
import math

import pytest
import torch

from engine.gansynth.config import PRESETS, ModelConfig
from engine.gansynth.model import (Discriminator, EqConv2d, Generator, blocks_for_progress, ema_update, generator_alpha,
                                   make_ema, minibatch_stddev, pixel_norm, span_rows, upsample_conv3x3)


def count(m):
    return sum(p.numel() for p in m.parameters())


def test_paper_parameter_counts_and_widths():
    cfg = PRESETS["paper"]
    assert cfg.widths == [256, 256, 256, 256, 256, 128, 64, 32]
    assert count(Generator(cfg)) == 7_311_246
    assert count(Discriminator(cfg)) == 6_831_230


@pytest.mark.parametrize("name", ["paper", "lite", "tiny"])
def test_shapes_per_config(name):
    cfg = PRESETS[name]
    g, d = Generator(cfg), Discriminator(cfg)
    z = torch.randn(2, cfg.latent_size)
    labels = torch.tensor([0, cfg.num_pitches - 1])
    for progress in ([0.0, 2.5, cfg.final_progress] if name != "paper" else [1.0]):
        with torch.no_grad():
            out = g(z, labels, progress)
            k = blocks_for_progress(cfg, progress)
            assert out.shape == (2, 2, *cfg.resolution(k))
            assert out.abs().max() <= 1.0
            logits, classes = d(out, progress)
        assert logits.shape == (2,) and classes.shape == (2, cfg.num_pitches)


def test_he_scales_match_magenta():
    g = Generator(PRESETS["paper"])
    b = g.blocks
    assert b[0].conv0.scale == pytest.approx(0.014041, abs=1e-6)  # fan_in 2*16*317
    assert b[1].conv0.scale == pytest.approx(0.029463, abs=1e-6)
    assert b[5].conv1.scale == pytest.approx(0.058926, abs=1e-6)  # 64 input channels
    assert b[6].conv1.scale == pytest.approx(0.083333, abs=1e-6)
    assert b[0].to_rgb.scale == pytest.approx(0.0625, abs=1e-6)
    assert b[6].to_rgb.scale == pytest.approx(0.176777, abs=1e-6)
    assert Discriminator(PRESETS["paper"]).logits.scale == pytest.approx(0.0625)


def test_scale_applied_before_bias():
    g = Generator(PRESETS["tiny"])
    conv = g.blocks[1].conv0
    with torch.no_grad():
        conv.bias.fill_(0.5)
        x = torch.randn(1, conv.weight.shape[1], 4, 4)
        ref = torch.nn.functional.conv2d(x, conv.weight, padding=1) * conv.scale + 0.5
        assert torch.allclose(conv(x), ref, atol=1e-5)


def test_pixel_norm_covers_onehot():
    """Block 1 sees pixel_norm(concat(z, onehot)): scaling z changes the one-hot's share."""
    cfg = PRESETS["tiny"]
    x = torch.cat([torch.ones(1, cfg.latent_size), torch.nn.functional.one_hot(torch.tensor([3]), 61)], 1)
    n = pixel_norm(x[:, :, None, None])[0, :, 0, 0]
    assert n[cfg.latent_size + 3] == pytest.approx(math.sqrt((cfg.latent_size + 61) / (cfg.latent_size + 1)), rel=1e-5)


def test_final_progress_uses_only_last_to_rgb():
    cfg = PRESETS["tiny"]
    g = Generator(cfg).eval()
    z, labels = torch.randn(2, cfg.latent_size), torch.tensor([1, 2])
    with torch.no_grad():
        before = g(z, labels)
        g.blocks[-2].to_rgb.weight.add_(1.0)
        assert torch.equal(before, g(z, labels))
        g.blocks[-1].to_rgb.weight.add_(1.0)
        assert not torch.equal(before, g(z, labels))


def test_fade_in_blends_nearest_upsampled_outputs():
    cfg = PRESETS["tiny"]
    g = Generator(cfg).eval()
    z, labels = torch.randn(1, cfg.latent_size), torch.tensor([5])
    with torch.no_grad():
        mid = g(z, labels, 1.25)  # blocks 2 and 3: alpha 0.75 / 0.25
        low = g(z, labels, 1.0)
        x = g.blocks[0](pixel_norm(torch.cat([z, torch.nn.functional.one_hot(labels, 61).float()], 1))[:, :, None, None])
        x = g.blocks[2](g.blocks[1](x))
        high = torch.tanh(g.blocks[2].to_rgb(x))
    expected = 0.75 * torch.nn.functional.interpolate(low, scale_factor=2) + 0.25 * high
    assert generator_alpha(2, 1.25) == 0.75 and generator_alpha(3, 1.25) == 0.25
    assert torch.allclose(mid, expected, atol=1e-6)


def test_fused_upsample_conv_equals_upsample_then_conv():
    torch.manual_seed(3)
    conv = EqConv2d(5, 7, 3, padding=1)
    conv.bias.data.normal_()
    for shape in ((2, 5, 3, 4), (1, 5, 8, 1), (1, 5, 1, 1)):
        for memory_format in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(*shape).to(memory_format=memory_format)
            want = conv(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
            got = upsample_conv3x3(x, conv)
            assert got.shape == want.shape
            assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["lite", "paper"])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_inference_path_matches_training_path(name, memory_format):
    """Without autograd every upsample + conv runs as one transposed conv (and, channels last, the
    output conv as one matrix product); the notes are the same (float rounding: relative RMS
    ~1e-6, a few 1e-4 at most on random weights)."""
    torch.manual_seed(0)
    g = Generator(PRESETS[name]).eval().to(memory_format=memory_format)
    z, labels = torch.randn(2, PRESETS[name].latent_size), torch.tensor([0, 40])
    with torch.no_grad():
        fast = g(z, labels)
    slow = g(z, labels).detach()  # autograd on: the plain upsample + conv
    assert ((fast - slow).norm() / slow.norm()).item() < 1e-5
    assert torch.allclose(fast, slow, atol=5e-4), (fast - slow).abs().max()
    for progress in (4.5, 5.0):  # fade-ins and earlier stages agree too
        with torch.no_grad():
            fast = g(z, labels, progress)
        assert torch.allclose(fast, g(z, labels, progress).detach(), atol=5e-4)


def test_inference_weights_follow_every_weight_change():
    """The inference path caches its rescaled weights; an optimizer step, an EMA update, a loaded
    state or a dtype change must reach the next inference call."""
    torch.manual_seed(2)
    cfg = PRESETS["tiny"]
    g = Generator(cfg).eval().to(memory_format=torch.channels_last)
    z, labels = torch.randn(1, cfg.latent_size), torch.tensor([5])

    def fresh_equals_cached():
        with torch.no_grad():
            cached = g(z, labels)
        for m in g.modules():
            m.__dict__.pop("_inference_cache", None)
        with torch.no_grad():
            fresh = g(z, labels)
        return torch.equal(cached, fresh)

    with torch.no_grad():
        before = g(z, labels)
    opt = torch.optim.Adam(g.parameters(), lr=0.1)
    g(z, labels).square().mean().backward()
    opt.step()
    assert fresh_equals_cached()
    with torch.no_grad():
        assert not torch.allclose(g(z, labels), before)
    ema_update(g, Generator(cfg), 0.5)
    assert fresh_equals_cached()
    g.load_state_dict(Generator(cfg).state_dict())
    assert fresh_equals_cached()
    g.double()
    z = z.double()
    with torch.no_grad():
        assert g(z, labels).dtype == torch.float64
    assert fresh_equals_cached()


def test_bf16_inference_casts_each_weight_once_and_follows_changes(monkeypatch):
    """Under CPU bf16 autocast the inference path keeps its weights and biases cast to bf16 (the
    casts autocast would make in every call), with the very same note, until a weight changes."""
    from engine.gansynth import model as M

    torch.manual_seed(3)
    cfg = PRESETS["tiny"]
    g = Generator(cfg).eval().to(memory_format=torch.channels_last)
    z, labels = torch.randn(1, cfg.latent_size), torch.tensor([5])

    def run():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return g(z, labels)

    cached = run()
    conv = g.blocks[-1].conv1
    kinds = {name: hit[1].dtype for name, hit in conv._inference_cache.items()}
    assert kinds == {"scaled": torch.bfloat16, "bias": torch.bfloat16}
    assert g.blocks[-1].conv0._inference_cache["transposed"][1].dtype == torch.bfloat16
    with monkeypatch.context() as m:
        m.setattr(M, "_autocast_dtype", lambda w: None)  # autocast casts in every call instead
        assert torch.equal(run(), cached)
    with torch.no_grad():
        conv.weight.mul_(-1.0)
        conv.bias.add_(0.5)
    changed = run()
    assert not torch.equal(changed, cached)
    with torch.no_grad():
        g.blocks[-2].conv1.bias.add_(0.5)  # a bias alone
    assert not torch.equal(run(), changed)
    changed = run()
    for mod in g.modules():
        mod.__dict__.pop("_inference_cache", None)
    assert torch.equal(run(), changed)
    with torch.no_grad():  # fp32 again: fp32 weights
        assert g(z, labels).dtype == torch.float32
        assert conv._inference_cache["scaled"][1].dtype == torch.float32


def test_minibatch_stddev_is_population_std_mean():
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    assert minibatch_stddev(x) == pytest.approx((math.sqrt(1 + 1e-6) + math.sqrt(4 + 1e-6)) / 2)


def test_ema_update():
    g = Generator(PRESETS["tiny"])
    ema = make_ema(g)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1.0)
    ema_update(ema, g, 0.9)
    p_ema, p = next(ema.parameters()), next(g.parameters())
    assert torch.allclose(p_ema, p - 0.9, atol=1e-5)


def test_config_resolutions():
    cfg = ModelConfig()
    assert cfg.resolution(1) == (2, 16) and cfg.output_shape == (128, 1024)
    assert ModelConfig(start_shape=(4, 8)).output_shape == (256, 512)
    assert cfg.highest_pitch == 84


@pytest.mark.parametrize("name", ["tiny", "lite"])
@pytest.mark.parametrize("rows", [1, 37, 96, 127, 128])
def test_time_span_equals_the_first_rows_of_the_whole_output(name, rows):
    """Only the rows a note can sound are computed (issue 16): the crop margins keep them exact."""
    torch.manual_seed(1)
    g = Generator(PRESETS[name]).eval()
    z, labels = torch.randn(2, PRESETS[name].latent_size), torch.tensor([3, 57])
    with torch.no_grad():
        whole = g(z, labels)
        span = g(z, labels, time_rows=rows)
    assert span.shape == (2, 2, rows, 1024)
    # float rounding only (oneDNN picks kernels by shape); a wrong margin would be off by ~0.1
    assert torch.allclose(span, whole[:, :, :rows], atol=1e-4), (span - whole[:, :, :rows]).abs().max()


def test_span_rows_crops_only_what_it_can():
    cfg = PRESETS["lite"]
    assert span_rows(cfg, 128) == {}                       # the whole note: nothing cropped
    assert span_rows(cfg, 96) == {7: 96, 6: 49, 5: 26, 4: 14}
    with pytest.raises(ValueError):
        span_rows(cfg, 0)

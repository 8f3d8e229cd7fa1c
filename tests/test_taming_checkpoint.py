"""Loading taming-transformers VQ-GAN checkpoints.

The reference below is an independent, straightforward functional forward of
taming's VQModel written from its architecture description (GroupNorm(32, eps
1e-6) + swish residual blocks, single-head attention, right/bottom-padded stride-2
downsampling, nearest upsampling, decoder levels numbered finest-first but run
coarsest-first, Euclidean code lookup). A tiny checkpoint in taming's key layout
must encode to the same codes and decode to the same pixels through our plugin.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from mmgen.tokenizers.vqgan.autoencoder import VQAutoencoder
from mmgen.tokenizers.vqgan.presets import PRESETS
from mmgen.tokenizers.vqgan.taming_checkpoint import (
    TamingCheckpointError,
    convert_taming_state_dict,
    load_taming_checkpoint,
    rename_taming_key,
    taming_architecture,
)
from mmgen.tokenizers.vqgan.tokenizer import VQGANTokenizer

TINY = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), resolution=16, z=8, n_embed=16, embed_dim=4)
F16 = dict(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,), resolution=256, z=256, n_embed=16384, embed_dim=256)


# ---- taming's key layout, from its architecture description -----------------------


def conv(shapes, name, cin, cout, k):
    shapes[f"{name}.weight"] = (cout, cin, k, k)
    shapes[f"{name}.bias"] = (cout,)


def norm(shapes, name, c):
    shapes[f"{name}.weight"] = (c,)
    shapes[f"{name}.bias"] = (c,)


def resblock(shapes, name, cin, cout):
    norm(shapes, f"{name}.norm1", cin)
    conv(shapes, f"{name}.conv1", cin, cout, 3)
    norm(shapes, f"{name}.norm2", cout)
    conv(shapes, f"{name}.conv2", cout, cout, 3)
    if cin != cout:
        conv(shapes, f"{name}.nin_shortcut", cin, cout, 1)


def attnblock(shapes, name, c):
    norm(shapes, f"{name}.norm", c)
    for part in ("q", "k", "v", "proj_out"):
        conv(shapes, f"{name}.{part}", c, c, 1)


def middle(shapes, name, c):
    resblock(shapes, f"{name}.mid.block_1", c, c)
    attnblock(shapes, f"{name}.mid.attn_1", c)
    resblock(shapes, f"{name}.mid.block_2", c, c)


def taming_shapes(ch, ch_mult, num_res_blocks, attn_resolutions, resolution, z, n_embed, embed_dim):
    shapes = {}
    conv(shapes, "encoder.conv_in", 3, ch, 3)
    res, cin = resolution, ch
    for i, mult in enumerate(ch_mult):
        for j in range(num_res_blocks):
            resblock(shapes, f"encoder.down.{i}.block.{j}", cin, ch * mult)
            cin = ch * mult
            if res in attn_resolutions:
                attnblock(shapes, f"encoder.down.{i}.attn.{j}", cin)
        if i < len(ch_mult) - 1:
            conv(shapes, f"encoder.down.{i}.downsample.conv", cin, cin, 3)
            res //= 2
    middle(shapes, "encoder", cin)
    norm(shapes, "encoder.norm_out", cin)
    conv(shapes, "encoder.conv_out", cin, z, 3)
    conv(shapes, "quant_conv", z, embed_dim, 1)
    shapes["quantize.embedding.weight"] = (n_embed, embed_dim)
    conv(shapes, "post_quant_conv", embed_dim, z, 1)
    cin = ch * ch_mult[-1]
    conv(shapes, "decoder.conv_in", z, cin, 3)
    middle(shapes, "decoder", cin)
    for i in reversed(range(len(ch_mult))):
        for j in range(num_res_blocks + 1):
            resblock(shapes, f"decoder.up.{i}.block.{j}", cin, ch * ch_mult[i])
            cin = ch * ch_mult[i]
            if res in attn_resolutions:
                attnblock(shapes, f"decoder.up.{i}.attn.{j}", cin)
        if i > 0:
            conv(shapes, f"decoder.up.{i}.upsample.conv", cin, cin, 3)
            res *= 2
    norm(shapes, "decoder.norm_out", cin)
    conv(shapes, "decoder.conv_out", cin, 3, 3)
    return shapes


def random_taming_state(seed=0):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in taming_shapes(**TINY).items():
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        if name.endswith(".weight") and len(shape) == 1:  # norm gains around 1
            state[name] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            state[name] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
    # Training-only entries a real checkpoint carries; the converter must skip them.
    # Codes drawn from real latents, so that lookups spread over the codebook.
    latents = ref_latents(state, torch.rand(1, 3, 16, 16, generator=g) * 2 - 1).permute(0, 2, 3, 1).reshape(-1, TINY["embed_dim"])
    state["quantize.embedding.weight"] = latents[torch.randperm(len(latents), generator=g)[: TINY["n_embed"]]].clone()
    state["loss.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4, generator=g)
    state["loss.perceptual_loss.lin0.model.1.weight"] = torch.randn(1, 64, 1, 1, generator=g)
    return state


# ---- the independent reference forward ---------------------------------------------


def gn(s, name, x):
    return F.group_norm(x, 32, s[f"{name}.weight"], s[f"{name}.bias"], eps=1e-6)


def cv(s, name, x, stride=1, padding=None):
    w = s[f"{name}.weight"]
    pad = w.shape[-1] // 2 if padding is None else padding
    return F.conv2d(x, w, s[f"{name}.bias"], stride=stride, padding=pad)


def ref_res(s, name, x):
    h = cv(s, f"{name}.conv1", F.silu(gn(s, f"{name}.norm1", x)))
    h = cv(s, f"{name}.conv2", F.silu(gn(s, f"{name}.norm2", h)))
    if f"{name}.nin_shortcut.weight" in s:
        x = cv(s, f"{name}.nin_shortcut", x)
    return x + h


def ref_attn(s, name, x):
    b, c, hh, ww = x.shape
    h = gn(s, f"{name}.norm", x)
    q = cv(s, f"{name}.q", h).reshape(b, c, hh * ww)
    k = cv(s, f"{name}.k", h).reshape(b, c, hh * ww)
    v = cv(s, f"{name}.v", h).reshape(b, c, hh * ww)
    weights = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(c), dim=2)  # [query, key]
    out = torch.einsum("bcj,bij->bci", v, weights).reshape(b, c, hh, ww)
    return x + cv(s, f"{name}.proj_out", out)


def ref_mid(s, name, h):
    return ref_res(s, f"{name}.mid.block_2", ref_attn(s, f"{name}.mid.attn_1", ref_res(s, f"{name}.mid.block_1", h)))


def ref_latents(s, x):
    levels = len(TINY["ch_mult"])
    h = cv(s, "encoder.conv_in", x)
    for i in range(levels):
        for j in range(TINY["num_res_blocks"]):
            h = ref_res(s, f"encoder.down.{i}.block.{j}", h)
            if f"encoder.down.{i}.attn.{j}.q.weight" in s:
                h = ref_attn(s, f"encoder.down.{i}.attn.{j}", h)
        if i < levels - 1:
            h = cv(s, f"encoder.down.{i}.downsample.conv", F.pad(h, (0, 1, 0, 1)), stride=2, padding=0)
    h = cv(s, "encoder.conv_out", F.silu(gn(s, "encoder.norm_out", ref_mid(s, "encoder", h))))
    return cv(s, "quant_conv", h)


def ref_encode(s, x):
    z = ref_latents(s, x)
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    codebook = s["quantize.embedding.weight"]
    codes = torch.cdist(flat, codebook).argmin(dim=1)
    return codes.view(z.shape[0], z.shape[2], z.shape[3])


def ref_decode(s, codes):
    levels = len(TINY["ch_mult"])
    quant = s["quantize.embedding.weight"][codes].permute(0, 3, 1, 2)
    h = cv(s, "decoder.conv_in", cv(s, "post_quant_conv", quant))
    h = ref_mid(s, "decoder", h)
    for i in reversed(range(levels)):
        for j in range(TINY["num_res_blocks"] + 1):
            h = ref_res(s, f"decoder.up.{i}.block.{j}", h)
            if f"decoder.up.{i}.attn.{j}.q.weight" in s:
                h = ref_attn(s, f"decoder.up.{i}.attn.{j}", h)
        if i > 0:
            h = cv(s, f"decoder.up.{i}.upsample.conv", F.interpolate(h, scale_factor=2.0, mode="nearest"))
    return cv(s, "decoder.conv_out", F.silu(gn(s, "decoder.norm_out", h)))


@pytest.fixture
def checkpoint(tmp_path):
    state = random_taming_state()
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "epoch": 3, "global_step": 1234, "pytorch-lightning_version": "1.0.8"}, path)
    return path, state


def test_architecture_is_read_from_the_shapes(checkpoint):
    _, state = checkpoint
    architecture = taming_architecture(state, resolution=16)
    assert (architecture.ch, architecture.ch_mult, architecture.num_res_blocks) == (32, (1, 2), 1)
    assert (architecture.attn_resolutions, architecture.z_channels) == ((8,), 8)
    assert (architecture.codebook_size, architecture.codebook_dim, architecture.l2_normalize) == (16, 4, False)
    assert (architecture.grid, architecture.norm_groups) == (8, 32)


def test_tiny_checkpoint_decodes_to_the_reference_pixels(checkpoint):
    path, state = checkpoint
    autoencoder = load_taming_checkpoint(path, resolution=16)
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        expected_codes = ref_encode(state, x)
        expected_pixels = ref_decode(state, expected_codes)
        codes = autoencoder.encode(x).codes
        pixels = autoencoder.decode_codes(codes)
    assert len(expected_codes.unique()) > 3  # the test sees several codes, not one
    assert torch.equal(codes, expected_codes)
    torch.testing.assert_close(pixels, expected_pixels, rtol=1e-4, atol=1e-5)


def test_tokenizer_from_a_taming_checkpoint(checkpoint):
    path, state = checkpoint
    config = VQGANTokenizer.Config(taming_checkpoint=str(path), architecture=PRESETS["tiny"])
    tokenizer = VQGANTokenizer.from_config(config)
    assert tokenizer.token_space.shape == (8, 8) and tokenizer.token_space.vocab_size == 16
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    segment = tokenizer.encode(images)
    with torch.no_grad():
        codes = ref_encode(state, images.float() / 127.5 - 1)
        pixels = ref_decode(state, codes)
    assert torch.equal(segment.tokens, codes.flatten(1))
    expected = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    decoded = torch.stack(tokenizer.decode(segment))
    assert (decoded.int() - expected.int()).abs().max() <= 1  # rounding at .5 boundaries only
    tokenizer.fit(lambda split: pytest.fail("a pretrained tokenizer reads no data"), out_dir=path.parent)


def test_every_key_of_the_paper_layout_finds_its_place():
    shapes = taming_shapes(**F16)
    state = {name: torch.empty(shape, device="meta") for name, shape in shapes.items()}
    architecture, converted = convert_taming_state_dict(state, resolution=256)
    assert architecture == PRESETS["f16_16384"]
    with torch.device("meta"):
        ours = VQAutoencoder(PRESETS["f16_16384"]).state_dict()
    ours.pop("quantizer.steps_unused")
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in ours.items()}
    assert len(converted) == len(shapes)


def test_key_mapping_examples():
    assert rename_taming_key("encoder.down.0.block.1.norm1.weight", levels=5) == "encoder.levels.0.blocks.1.norm1.weight"
    assert rename_taming_key("encoder.down.4.attn.1.proj_out.bias", levels=5) == "encoder.levels.4.attentions.1.out.bias"
    assert rename_taming_key("encoder.down.2.downsample.conv.weight", levels=5) == "encoder.downsamples.2.conv.weight"
    assert rename_taming_key("decoder.up.4.block.2.nin_shortcut.weight", levels=5) == "decoder.levels.0.blocks.2.shortcut.weight"
    assert rename_taming_key("decoder.up.1.upsample.conv.bias", levels=5) == "decoder.upsamples.3.conv.bias"
    assert rename_taming_key("decoder.mid.attn_1.q.weight", levels=5) == "decoder.middle.attention.query.weight"
    assert rename_taming_key("quantize.embedding.weight", levels=5) == "quantizer.codebook"
    assert rename_taming_key("post_quant_conv.weight", levels=5) == "from_code.weight"
    assert rename_taming_key("loss.discriminator.main.0.weight", levels=5) is None


def test_refuses_what_it_cannot_load(tmp_path):
    torch.save({"state_dict": {"model.weight": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(TamingCheckpointError, match="no taming VQ-GAN state_dict"):
        load_taming_checkpoint(tmp_path / "other.ckpt")
    with pytest.raises(TamingCheckpointError, match="unsupported taming key 'encoder.down.0.block.0.temb_proj.weight'"):
        rename_taming_key("encoder.down.0.block.0.temb_proj.weight", levels=2)
    state = random_taming_state()
    state["encoder.down.0.block.0.conv_shortcut.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, tmp_path / "variant.ckpt")
    with pytest.raises(TamingCheckpointError, match="conv_shortcut"):
        load_taming_checkpoint(tmp_path / "variant.ckpt", resolution=16)

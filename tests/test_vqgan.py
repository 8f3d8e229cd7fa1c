"""The vqgan tokenizer: quantizer, losses, tokenizer contract, files."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from mmgen.batch import Record, Segment
from mmgen.tokenizers.vqgan.architecture import ArchitectureConfig
from mmgen.tokenizers.vqgan.autoencoder import VQAutoencoder, pixels_to_unit
from mmgen.tokenizers.vqgan.losses import LossConfig, VQGANLoss, VQGANTrainee, hinge_discriminator_loss
from mmgen.tokenizers.vqgan.perceptual import LPIPS
from mmgen.tokenizers.vqgan.presets import PRESETS
from mmgen.tokenizers.vqgan.quantizer import Restart, VectorQuantizer
from mmgen.tokenizers.vqgan.tokenizer import VQGANTokenizer
from mmgen.tokenizers.vqgan.training import TrainConfig


def png(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def blocks(rng: np.random.Generator) -> np.ndarray:
    """A 16x16 image of 4x4-pixel blocks, each white, red or blue: one flat colour per token of the tiny preset."""
    palette = np.array([[255, 255, 255], [230, 25, 75], [0, 130, 200]], dtype=np.uint8)
    return palette[rng.integers(3, size=(4, 4))].repeat(4, axis=0).repeat(4, axis=1)


_rng = np.random.default_rng(0)
TRAIN_IMAGES = [blocks(_rng) for _ in range(256)]
IMAGES = [blocks(_rng) for _ in range(8)]  # unseen in training


class Tracker:
    def __init__(self):
        self.metrics, self.images = [], []

    def log_metrics(self, metrics, *, step=None):
        self.metrics.append((step, dict(metrics)))

    def log_image(self, image, *, file_name):
        self.images.append((file_name, image))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    records = {
        "train": [Record(key=f"t{i}", modality="image", data=png(image), captions=()) for i, image in enumerate(TRAIN_IMAGES)],
        "val": [Record(key=f"v{i}", modality="image", data=png(image), captions=()) for i, image in enumerate(IMAGES)],
    }
    # The tiny net needs ~150 updates at the full rate before codes start to carry colour; the rate
    # then decays (cosine, to 5%). On a constant rate the last updates move the PSNR by up to 7 dB
    # with the CPU's float summation order; decaying, by 0.7 dB (measured below the round-trip test).
    train = TrainConfig(steps=400, batch_size=8, lr=2e-3, warmup_steps=1, min_lr_ratio=0.05, eval_every=200, grid_images=4)
    config = VQGANTokenizer.Config(preset="tiny", train=train)
    tokenizer = VQGANTokenizer.from_config(config)
    tracker = Tracker()
    tokenizer.fit(records.__getitem__, out_dir=tmp_path_factory.mktemp("fit"), tracker=tracker, seed=0)
    return tokenizer, tracker


def batch_of(images) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


# ---- architecture ------------------------------------------------------------------


def test_preset_token_grids():
    grids = {name: (a.grid, a.codebook_size, a.downsampling) for name, a in PRESETS.items()}
    assert grids == {"tiny": (4, 32, 4), "shapes": (8, 512, 8), "f16_16384": (16, 16384, 16)}
    assert [a.encoder for a in PRESETS.values()] == ["conv", "patch", "conv"]


def test_architecture_rejects_sizes_that_do_not_fit():
    with pytest.raises(ValueError, match="resolution 20 is not divisible by the downsampling factor 8"):
        ArchitectureConfig(resolution=20, patch_size=2, ch_mult=(1, 1, 1))
    with pytest.raises(ValueError, match="channel count 24 is not divisible by norm_groups=16"):
        ArchitectureConfig(ch=24, norm_groups=16, ch_mult=(1, 2))


def test_patch_stem_shapes():
    architecture = ArchitectureConfig(
        resolution=16, patch_size=2, ch=8, ch_mult=(1, 2), norm_groups=4, z_channels=8, codebook_size=8, codebook_dim=4
    )
    autoencoder = VQAutoencoder(architecture)
    q = autoencoder.encode(torch.zeros(2, 3, 16, 16))
    assert q.codes.shape == (2, 4, 4) and q.quantized.shape == (2, 4, 4, 4)
    assert autoencoder.decode_codes(q.codes).shape == (2, 3, 16, 16)


def test_middle_attention_can_be_left_out():
    import attrs

    with_attention = VQAutoencoder(PRESETS["tiny"]).state_dict()
    without = VQAutoencoder(attrs.evolve(PRESETS["tiny"], middle_attention=False)).state_dict()
    dropped = sorted(set(with_attention) - set(without))
    assert set(without) < set(with_attention)
    assert {name.split(".attention.")[0] for name in dropped} == {"encoder.middle", "decoder.middle"}


def test_patch_encoder_tokens_see_only_their_own_patch():
    import attrs

    torch.manual_seed(0)
    architecture = attrs.evolve(PRESETS["shapes"], encoder="patch")
    autoencoder = VQAutoencoder(architecture).eval()
    for module in autoencoder.encoder.modules():  # leave the zero-initialised identity start
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.normal_(module.weight, std=0.2)
    white = torch.ones(1, 3, 64, 64)
    changed = white.clone()
    changed[0, :, 9:14, 18:22] = -1.0  # inside the patch of token (1, 2) only: rows 8-15, columns 16-23
    with torch.no_grad():
        base, edited = autoencoder.encoder(white), autoencoder.encoder(changed)
        codes = autoencoder.encode(white).codes
    differs = (base - edited).abs().amax(dim=1)[0] > 0
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[1, 2] = True
    assert torch.equal(differs, expected)
    assert torch.unique(codes).numel() == 1  # a flat canvas is one code everywhere


# ---- quantizer ---------------------------------------------------------------------


def test_nearest_code_losses_and_straight_through():
    q = VectorQuantizer(codebook_size=3, dim=2, l2_normalize=False)
    q.codebook.data = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    z = torch.tensor([[0.9, 0.2], [0.1, 0.6], [-2.0, -0.5], [0.0, 0.0]]).T.reshape(1, 2, 1, 4).requires_grad_()
    out = q(z)
    assert out.codes.tolist() == [[[0, 1, 2, 0]]]  # a tie goes to the lower index
    chosen = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [1.0, 0.0]]).T.reshape(1, 2, 1, 4)
    expected = ((chosen - z.detach()) ** 2).mean()
    torch.testing.assert_close(out.codebook_loss, expected)
    torch.testing.assert_close(out.commitment_loss, expected)
    torch.testing.assert_close(out.quantized.detach(), chosen)
    out.quantized.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))


def test_l2_lookup_ignores_magnitudes():
    q = VectorQuantizer(codebook_size=2, dim=2, l2_normalize=True)
    q.codebook.data = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    z = torch.tensor([[5.0, 1.0], [0.1, 0.2]]).T.reshape(1, 2, 1, 2)
    out = q(z)
    assert out.codes.tolist() == [[[0, 1]]]
    torch.testing.assert_close(out.quantized.norm(dim=1), torch.ones(1, 1, 2))


def test_twins_are_reported_as_their_lowest_id_whatever_the_float_path():
    q = VectorQuantizer(codebook_size=5, dim=2, l2_normalize=False)
    # 0, 2 and 4 are one twin group (4 is 1e-5 from 2, 2e-5 from 0); 1 and 3 are 1e-3 apart: not twins.
    q.codebook.data = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1e-5], [0.0, 1.001], [1.0, 2e-5]])
    assert q.canonical.tolist() == [0, 1, 2, 3, 4]  # until merged, every id is itself
    assert q.merge_twins() == 2
    assert q.canonical.tolist() == [0, 1, 0, 3, 0]
    # A latent nearest to twin 4 (or 2) is reported as 0; the one nearest to 3 stays 3.
    z = torch.tensor([[1.0, 3e-5], [1.0, 1.1e-5], [0.0, 1.01], [0.0, 0.99]]).T.reshape(1, 2, 1, 4)
    assert q(z).codes.tolist() == [[[0, 0, 3, 1]]]
    assert "canonical" not in q.state_dict()  # derived from the codebook, not saved


def test_a_loaded_tokenizer_merges_its_twins(tmp_path):
    torch.manual_seed(0)
    autoencoder = VQAutoencoder(PRESETS["tiny"])
    autoencoder.quantizer.codebook.data[5] = autoencoder.quantizer.codebook.data[2]
    VQGANTokenizer(autoencoder=autoencoder).save(tmp_path)
    loaded = VQGANTokenizer.load(tmp_path)
    assert loaded.merged_twins == 1 and int(loaded.autoencoder.quantizer.canonical[5]) == 2


def test_first_training_step_places_the_codebook_on_latents():
    q = VectorQuantizer(codebook_size=4, dim=2, l2_normalize=False).train()
    latents = torch.arange(1.0, 17.0).reshape(1, 2, 2, 4)
    out = q(latents, restart=Restart(dead_after=20, generator=torch.Generator().manual_seed(0)))
    rows = {tuple(r) for r in latents.permute(0, 2, 3, 1).reshape(-1, 2).tolist()}
    assert out.restarted == 4 and all(tuple(code) in rows for code in q.codebook.tolist())


def test_codes_unused_for_dead_after_steps_restart_on_latents():
    q = VectorQuantizer(codebook_size=4, dim=2, l2_normalize=False).train()
    q.codebook.data = torch.tensor([[0.0, 0.0], [10.0, 10.0], [20.0, 20.0], [30.0, 30.0]])
    near_zero = torch.zeros(1, 2, 2, 2)
    for _ in range(3):
        q(near_zero)
    assert q.steps_unused.tolist()[0] == 0 and min(q.steps_unused.tolist()[1:]) > 10**9  # never used
    q.steps_unused[1:] = 3
    latents = torch.arange(16.0).reshape(1, 2, 2, 4) / 16
    generator = torch.Generator().manual_seed(0)
    assert q(latents, restart=Restart(dead_after=4, generator=generator)).restarted == 0
    assert q.steps_unused.tolist() == [0, 4, 4, 4]
    out = q(latents, restart=Restart(dead_after=4, generator=generator))
    assert out.restarted == 3
    rows = {tuple(r) for r in latents.permute(0, 2, 3, 1).reshape(-1, 2).tolist()}
    assert all(tuple(code) in rows for code in q.codebook[1:].tolist())
    assert q.codebook[0].tolist() == [0.0, 0.0]
    assert q.steps_unused.max() <= 1


# ---- losses ------------------------------------------------------------------------


def make_trainee(disc_start):
    torch.manual_seed(0)
    config = LossConfig(disc_start=disc_start, disc_channels=8, disc_layers=2, dead_after=None)
    return VQGANTrainee(VQAutoencoder(PRESETS["tiny"]), config), VQGANLoss(config)


def grads(module):
    return [p.grad.clone() if p.grad is not None else None for p in module.parameters()]


BATCH = batch_of(IMAGES[:4])


def test_before_disc_start_the_discriminator_is_idle():
    trainee, loss_fn = make_trainee(disc_start=5)
    out = loss_fn(trainee, BATCH, 4, torch.Generator())
    out.loss.backward()
    assert all(g is None for g in grads(trainee.discriminator))
    assert "disc_loss" not in out.metrics
    x = pixels_to_unit(BATCH)
    reconstruction, q = trainee.autoencoder(x)
    expected = (reconstruction - x).pow(2).mean() + q.codebook_loss + 0.25 * q.commitment_loss
    torch.testing.assert_close(out.loss, expected)


def test_gan_terms_reach_only_their_own_network():
    trainee, loss_fn = make_trainee(disc_start=0)
    out = loss_fn(trainee, BATCH, 0, torch.Generator())
    out.loss.backward()
    got_ae, got_d = grads(trainee.autoencoder), grads(trainee.discriminator)

    # The discriminator learns from the hinge loss on detached reconstructions alone.
    trainee.zero_grad()
    x = pixels_to_unit(BATCH)
    reconstruction, q = trainee.autoencoder(x)
    hinge_discriminator_loss(trainee.discriminator(x), trainee.discriminator(reconstruction.detach())).backward()
    for got, want in zip(got_d, grads(trainee.discriminator)):
        torch.testing.assert_close(got, want)

    # The autoencoder learns from nll + codebook + adaptive weight x generator loss (eq. 7).
    trainee.zero_grad()
    reconstruction, q = trainee.autoencoder(x)
    nll = (reconstruction - x).pow(2).mean()
    generator_loss = -trainee.discriminator(reconstruction).mean()
    last = trainee.autoencoder.decoder.last_layer
    g_nll = torch.autograd.grad(nll, last, retain_graph=True)[0]
    g_adv = torch.autograd.grad(generator_loss, last, retain_graph=True)[0]
    weight = 0.8 * g_nll.norm() / (g_adv.norm() + 1e-4)
    torch.testing.assert_close(out.metrics["disc_adaptive_weight"], weight)
    (nll + q.codebook_loss + 0.25 * q.commitment_loss + weight.detach() * generator_loss).backward()
    for got, want in zip(got_ae, grads(trainee.autoencoder)):
        torch.testing.assert_close(got, want)


def test_lpips_weights_come_from_a_taming_checkpoint(tmp_path):
    torch.manual_seed(0)
    reference = LPIPS()
    state = {k: v.abs() if k.startswith("lin") else v for k, v in reference.state_dict().items()}
    torch.save({"state_dict": {f"loss.perceptual_loss.{k}": v for k, v in state.items()}, "epoch": 1}, tmp_path / "vq.ckpt")
    loaded = LPIPS.from_file(tmp_path / "vq.ckpt")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    a, b = torch.rand(2, 1, 3, 32, 32) * 2 - 1
    assert loaded(a, a).item() == 0.0 and loaded(a, b).item() > 0.0
    with_file = VQGANTrainee(VQAutoencoder(PRESETS["tiny"]), LossConfig(perceptual_weights=str(tmp_path / "vq.ckpt")))
    assert with_file.perceptual is not None
    assert not any(p.requires_grad for p in with_file.perceptual.parameters())
    with pytest.raises(ValueError, match="perceptual_weights: no file at .*none.pt"):  # found when the recipe loads
        LossConfig(perceptual_weights=str(tmp_path / "none.pt"))
    assert VQGANTrainee(VQAutoencoder(PRESETS["tiny"]), LossConfig()).perceptual is None


# ---- the tokenizer -----------------------------------------------------------------


def test_round_trip_within_reconstruction_error(trained):
    tokenizer, _ = trained
    images = batch_of(IMAGES)
    segment = tokenizer.encode(images)
    assert segment.tokens.shape == (8, 16) and segment.lengths.tolist() == [16] * 8
    decoded = torch.stack(tokenizer.decode(segment))
    assert decoded.dtype == torch.uint8 and decoded.shape == images.shape
    mse = (decoded.float() - images.float()).pow(2).mean()
    # dB, on images the tokenizer never saw; painting each its mean colour gives 8.6. Measured with
    # fit seeds 0, 1, 2 under five float paths (ATen AVX-512 / AVX2 / scalar kernels, MKL's default
    # and compatible code paths): 24.96-25.63, 28.57-28.65, 28.50 (seed 0 learns slowest). 21 dB
    # allows 2.5 times the worst squared error. On a constant rate seed 0 spread over 23.3-30.4 dB
    # here and gave 22.9 on an Intel Xeon.
    assert 10 * torch.log10(255**2 / mse) > 21.0
    assert torch.equal(decoded, tokenizer.reconstruct(images))


def test_fit_logs_val_psnr_usage_perplexity_and_a_grid(trained):
    tokenizer, tracker = trained
    val_steps = [step for step, m in tracker.metrics if "image/val/psnr" in m]
    assert val_steps == [200, 400]
    last = [m for _, m in tracker.metrics if "image/val/psnr" in m][-1]
    assert last["image/val/psnr"] == pytest.approx(tokenizer.train_metrics["psnr"])
    assert 0 < last["image/val/codebook_usage"] <= 1 and last["image/val/perplexity"] >= 1
    names = [name for name, _ in tracker.images]
    assert names == ["reconstructions/step_0000200.png", "reconstructions/step_0000400.png"]
    assert tracker.images[-1][1].shape == (32, 64, 3) and tracker.images[-1][1].dtype == np.uint8


def test_token_space_and_contract_errors(trained):
    tokenizer, _ = trained
    space = tokenizer.token_space
    assert (space.name, space.vocab_size, space.shape, space.variable_length) == ("image", 32, (4, 4), False)
    assert tokenizer.modality == "image"
    with pytest.raises(ValueError, match=r"vqgan expects uint8 images \[B, 3, 16, 16\], got torch.uint8 \(1, 3, 8, 8\)"):
        tokenizer.encode(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="got torch.float32"):
        tokenizer.encode(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 32\)"):
        tokenizer.decode(Segment.full("image", torch.full((1, 16), 32)))
    with pytest.raises(ValueError, match="got a 'text' segment"):
        tokenizer.decode(Segment.full("text", torch.zeros(1, 16, dtype=torch.long)))
    assert tokenizer.encode([torch.zeros(3, 16, 16, dtype=torch.uint8)]).tokens.shape == (1, 16)


def test_code_vectors_are_a_copy_of_the_lookup_codebook(trained):
    tokenizer, _ = trained
    vectors = tokenizer.code_vectors()
    quantizer = tokenizer.autoencoder.quantizer
    assert vectors.shape == (32, tokenizer.architecture.codebook_dim)
    assert torch.equal(vectors, quantizer.entries().detach())
    # The codes of flat red and flat blue blocks look up exactly these vectors.
    red_blue = np.zeros((16, 16, 3), dtype=np.uint8)
    red_blue[:, :8], red_blue[:, 8:] = (230, 25, 75), (0, 130, 200)
    codes = tokenizer.encode(batch_of([red_blue])).tokens[0]
    latents = quantizer.embed(codes.view(1, 4, 4))[0].permute(1, 2, 0).reshape(16, -1)
    assert torch.equal(latents, vectors[codes])
    vectors.zero_()  # callers may change their copy
    assert not torch.equal(tokenizer.code_vectors(), vectors)


def test_load_item_decodes_and_resizes(trained):
    tokenizer, _ = trained
    assert torch.equal(tokenizer.load_item(png(IMAGES[3])), batch_of(IMAGES[3:4])[0])
    wide = np.zeros((24, 32, 3), dtype=np.uint8)
    wide[:, 4:28] = 200  # the centre square survives the crop
    item = tokenizer.load_item(png(wide, "JPEG"))
    assert item.shape == (3, 16, 16) and item.dtype == torch.uint8 and abs(int(item.float().mean()) - 200) <= 3


def test_save_load_keeps_tokens_and_hash(trained, tmp_path):
    tokenizer, _ = trained
    tokenizer.save(tmp_path / "image")
    assert sorted(p.name for p in (tmp_path / "image").iterdir()) == ["vqgan.json", "weights.pt"]
    loaded = VQGANTokenizer.load(tmp_path / "image")
    assert loaded.content_hash() == tokenizer.content_hash() and len(loaded.content_hash()) == 64
    images = batch_of(IMAGES)
    assert torch.equal(loaded.encode(images).tokens, tokenizer.encode(images).tokens)
    with torch.no_grad():
        loaded.autoencoder.quantizer.codebook[0, 0] += 1e-3
    assert loaded.content_hash() != tokenizer.content_hash()
    (tmp_path / "image" / "vqgan.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a saved vqgan tokenizer"):
        VQGANTokenizer.load(tmp_path / "image")

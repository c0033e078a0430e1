"""A whole Wan 2.1 text-to-video run against diffusers' WanPipeline (tests/fixtures/wan/make_pipeline.py): a tiny
random checkpoint in both layouts, a prompt and a negative prompt with non-ASCII text, 4 UniPC steps with CFG 5,
started from the same noise. Also the CLI on it and its bad input, one line each."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests import helpers
from vidgen import generate as generate_lib
from vidgen import main as main_lib
from vidgen import tasks
from vidgen import video_io
from vidgen.models import wan
from vidgen.weights import safetensors_io

FIXTURE = os.path.join(helpers.ROOT, "tests", "fixtures", "wan", "pipeline")
with open(os.path.join(FIXTURE, "meta.json")) as _f:
  META = json.load(_f)
IO = dict(np.load(os.path.join(FIXTURE, "io.npz")))
TOLERANCE = 1e-4
# The frames after 4 CFG-5 steps: float32 rounding of the DiT (4.9e-6 relative to diffusers) grows through the
# guided steps to ~1e-4 in the decoded frames, and how much depends on the CPU and XLA's threading (measured
# max 9.2e-5 on the machine that made the fixture, 1.06e-4 and 1.19e-4 on another; the VAE alone decodes the
# reference latents to within 1.1e-5 there).
FRAMES_TOLERANCE = 2e-4


def _rel_err(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


def wan_config(layout: str = "diffusers", preset: str = "t2v", **overrides):
  c = helpers.load_config(preset, "wan.py")
  c.weights = os.path.join(FIXTURE, layout)
  c.data.height, c.data.width, c.data.num_frames = 32, 48, 5
  c.dit.dtype = "float32"
  c.sample.steps, c.sample.cfg_scale, c.sample.shift = 4, 5.0, META["flow_shift"]
  c.sample.negative_prompt = META["negative_prompt"]
  if layout == "wan":  # Wan's layout records only the DiT's config: the VAE and text encoder are the preset's
    vae, text = META["configs"]["vae"], META["configs"]["text_encoder"]
    c.vae.dim, c.vae.z_dim, c.vae.dim_mult, c.vae.num_res_blocks = (vae["base_dim"], vae["z_dim"],
                                                                    tuple(vae["dim_mult"]), vae["num_res_blocks"])
    c.vae.latent_mean, c.vae.latent_std = tuple(vae["latents_mean"]), tuple(vae["latents_std"])
    c.text.vocab_size, c.text.width, c.text.depth, c.text.num_heads = (text["vocab_size"], text["d_model"],
                                                                        text["num_layers"], text["num_heads"])
    c.text.d_kv, c.text.d_ff = text["d_kv"], text["d_ff"]
  return helpers.override(c, **overrides)


def _noise():
  return np.moveaxis(IO["noise"], 1, -1)  # diffusers [B, C, F, H, W] -> [B, F, H, W, C]


@pytest.mark.parametrize("layout", ["diffusers", "wan"])
def test_four_cfg_steps_equal_wan_pipeline(layout):
  gen = generate_lib.WanGenerator(wan_config(layout))
  text = gen.encode_prompts([META["prompt"]])[0]
  assert _rel_err(text, IO["prompt_embeds"]) <= 1e-5
  assert _rel_err(gen.encode_prompts([META["negative_prompt"]])[0], IO["negative_prompt_embeds"]) <= 1e-5
  latents = gen.sample_latents([META["prompt"]], noise=_noise(), progress=False)
  assert _rel_err(latents, np.moveaxis(IO["final_latents"], 1, -1)) <= TOLERANCE
  frames = np.clip(gen.decode(latents, as_uint8=False)[0] * 0.5 + 0.5, 0.0, 1.0)  # WanPipeline's output_type='np'
  assert frames.shape == IO["frames"].shape == (5, 32, 48, 3)
  assert float(np.max(np.abs(frames - IO["frames"]))) <= FRAMES_TOLERANCE


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "vidgen.main", *args], capture_output=True, text=True,
                        cwd=helpers.ROOT, timeout=300)


def test_cli_generates_from_the_checkpoint_folder_and_the_given_noise(tmp_path):
  noise = tmp_path / "noise.npy"
  np.save(noise, IO["noise"])
  args = ["--config=configs/wan.py:t2v", f"--config.weights={FIXTURE}/diffusers", "--config.dit.dtype=float32",
          "--config.sample.steps=4", f"--config.sample.shift={META['flow_shift']}",
          f"--config.sample.negative_prompt={META['negative_prompt']}", f"--workdir={tmp_path / 'w'}",
          "--mode=generate", f"--prompt={META['prompt']}", "--size=48x32", "--frames=5", f"--init_noise={noise}",
          f"--out_dir={tmp_path / 'out'}", "--no_progress"]
  out = _cli(*args)
  assert out.returncode == 0, out.stderr[-2000:]
  index = json.loads((tmp_path / "out" / "index.json").read_text())
  assert index[0]["settings"]["init_noise"] == str(noise) and index[0]["settings"]["solver"] == "unipc"
  video, _ = video_io.read_video(str(tmp_path / "out" / index[0]["file"]))
  assert video.shape == (5, 4 * 32, 4 * 48, 3)  # written 4x enlarged
  small = video.reshape(5, 32, 4, 48, 4, 3).mean(axis=(2, 4)) / 255.0
  assert float(np.mean(np.abs(small - IO["frames"]))) < 0.03  # the same video, through H.264


def test_the_published_1_3b_configs_resolve_under_the_named_preset(tmp_path):
  """The config files diffusers writes for Wan2.1-T2V-1.3B's shapes (experiments/make_random_wan.py; weights left
  out) agree with every field of t2v_1_3b; the 14B preset differs in the DiT's width."""
  folder = tmp_path / "wan"
  shutil.copytree(os.path.join(helpers.ROOT, "tests", "fixtures", "wan", "published_1_3b"), folder)
  (folder / "tokenizer").mkdir()
  config, _, found = wan.resolve(wan_config(preset="t2v_1_3b", weights=str(folder)))
  assert (config.dit.dim, config.dit.depth, config.text.width, config.vae.dim) == (1536, 30, 4096, 96)
  np.testing.assert_allclose(found["latent_std"][:2], [2.8184, 1.4541])
  with pytest.raises(safetensors_io.WeightsError, match=r"has dit.dim=1536, the preset 't2v_14b' 5120"):
    wan.resolve(wan_config(preset="t2v_14b", weights=str(folder)))


def test_bad_folders_and_noise_fail_in_one_line_before_loading(tmp_path):
  with pytest.raises(safetensors_io.WeightsError, match=r"has dit.dim=32, the preset 't2v_1_3b' 1536"):
    generate_lib.WanGenerator(wan_config(preset="t2v_1_3b"))
  with pytest.raises(safetensors_io.WeightsError, match="no recognisable Wan 2.1 checkpoint"):
    generate_lib.WanGenerator(wan_config(weights=str(tmp_path)))
  pth = tmp_path / "wan"
  shutil.copytree(os.path.join(FIXTURE, "wan"), pth)
  (pth / "Wan2.1_VAE.safetensors").rename(pth / "Wan2.1_VAE.pth")
  with pytest.raises(safetensors_io.WeightsError, match=r"Wan2.1_VAE.pth is a PyTorch pickle.*convert_pth"):
    generate_lib.WanGenerator(wan_config("wan", weights=str(pth)))
  np.save(tmp_path / "noise.npy", IO["noise"][:, :, :1])
  with pytest.raises(tasks.TaskError, match=r"has shape \(1, 4, 1, 4, 6\): 1 prompt\(s\) at this size need "
                     r"\(1, 4, 2, 4, 6\)"):
    main_lib.run(wan_config(), str(tmp_path / "w"), "generate", ["a fox"],
                 task=tasks.Request(init_noise=str(tmp_path / "noise.npy")))
  with pytest.raises(tasks.TaskError, match=r"--overlap=3 frames: allowed 4 to 4 .* at least 4 \(one whole latent "
                     r"frame at the chunk's end\) for a DiT without frame conditioning"):
    main_lib.run(wan_config(**{"data.num_frames": 9}), str(tmp_path / "w"), "generate", ["a fox"],
                 task=tasks.Request(name="connect", videos=["a.mp4", "b.mp4"], overlap=3))
  assert not os.path.exists(tmp_path / "w" / "samples")
  for mode in ("train_dit", "all"):
    with pytest.raises(main_lib.config_validation.ConfigError, match="runs --mode=generate"):
      main_lib.run(wan_config(), str(tmp_path / "w"), mode)


def test_edit_and_image_run_on_wan_weights():
  gen = generate_lib.WanGenerator(wan_config())
  source = (IO["frames"] * 255).round().astype(np.uint8)  # the reference run's video, re-generated at 0.5
  edited = tasks.edit(gen, [META["prompt"]], source, 0.5, seed=0, progress=False)
  assert edited.shape == (1, 5, 32, 48, 3)
  assert np.abs(edited[0].astype(int) - source).mean() < np.abs(
      gen.generate([META["prompt"]], seed=0, progress=False)[0].astype(int) - source).mean()  # closer than t2v


def test_sharded_over_fsdp_8_the_run_is_the_same():
  gen = generate_lib.WanGenerator(wan_config(**{"mesh.data": 1, "mesh.fsdp": 8}))
  kernel = gen.params["dit"]["blocks"]["ffn"]["fc1"]["kernel"]  # [layers, embed, mlp]: embed split 8 ways
  assert kernel.sharding.shard_shape(kernel.shape)[1] == kernel.shape[1] // 8
  text = gen.params["text_encoder"]["token_embedding"]["embedding"]
  assert text.sharding.shard_shape(text.shape)[1] == text.shape[1] // 8
  latents = gen.sample_latents([META["prompt"]], noise=_noise(), progress=False)
  # The unsharded run's tolerance: 4 guided steps grow float32 rounding (1.06e-5 on a CPU of 2026-12-02).
  assert _rel_err(latents, np.moveaxis(IO["final_latents"], 1, -1)) <= TOLERANCE
  # Sharded sums add in another order; the random tiny VAE amplifies it (its raw output spans +-2.8).
  frames = np.clip(gen.decode(latents, as_uint8=False)[0] * 0.5 + 0.5, 0.0, 1.0)
  assert float(np.max(np.abs(frames - IO["frames"]))) <= FRAMES_TOLERANCE


def test_known_frame_tasks_run_on_wan_weights_by_replacing_whole_latent_frames(tmp_path):
  gen = generate_lib.WanGenerator(wan_config(**{"data.num_frames": 9}))
  prompt, rng = META["prompt"], np.random.default_rng(0)
  clip = rng.integers(0, 256, (9, 32, 48, 3), dtype=np.uint8)
  # i2v: latent frame 0 is the image's own latent; the sampled ones differ from t2v's with the same noise.
  frames, mask = tasks.known_frames(9, [0], clip[None, :1])
  z = np.asarray(gen.sample_latents([prompt], seed=0, frames=frames, frame_mask=mask, progress=False))
  y, _ = gen.condition(frames, mask)
  np.testing.assert_allclose(z[:, 0], np.asarray(y)[:, 0], atol=1e-5)
  free = np.asarray(gen.sample_latents([prompt], seed=0, progress=False))
  assert np.abs(z[:, 1:] - free[:, 1:]).max() > 1e-2
  # Keyframes at 0 and 8 (8 held over latent frame 2: frames 5 to 8); latent frame 1 is sampled.
  assert tasks.interpolate(gen, [prompt], clip[[0, 8]], [0, 8], seed=0, progress=False).shape == (1, 9, 32, 48, 3)
  entry = tasks.extend(gen, prompt, clip, str(tmp_path / "back.mp4"), times=2, direction="backward", progress=False)
  assert entry["frames"] == 9 + 2 * 4 and entry["overlap"] == 5
  video, n = tasks.connect(gen, prompt, clip, clip[::-1], progress=False)  # 4 frames a side: one whole latent
  assert n == 1 and video.shape == (19, 32, 48, 3)
  with pytest.raises(ValueError, match="must cover frame 0 or all 4 frames of a latent frame"):
    gen.sample_latents([prompt], frames=frames, frame_mask=tasks.known_frames(9, [3], clip[None, :1])[1])

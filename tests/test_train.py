"""End to end on the tiny 'test' preset (the `trained` workdir of conftest.py): training lowers the loss,
reports are written, sampling is deterministic. Exact resume after a kill: tests/test_fault_tolerance.py."""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers
from vidgen import config_validation
from vidgen import generate as generate_lib
from vidgen import main as main_lib
from vidgen import video_io
from vidgen.evaluate import evaluate as evaluate_lib
from vidgen.models import build
from vidgen.models import load
from vidgen.parallel import mesh as mesh_lib
from vidgen.train import dit_trainer


def _losses(workdir, name):
  return [m["loss"] for m in helpers.read_metrics(os.path.join(workdir, name, "metrics.jsonl"))]


def test_training_lowers_both_losses(trained):
  _, workdir, _ = trained
  vae = _losses(workdir, "vae")
  dit = _losses(workdir, "dit")
  assert vae[-1] < 0.8 * vae[0], vae
  assert np.mean(dit[-2:]) < 0.9 * np.mean(dit[:2]), dit


def test_metrics_and_report_written(trained):
  _, workdir, report = trained
  m = helpers.read_metrics(os.path.join(workdir, "dit", "metrics.jsonl"))[-1]
  for key in ("loss", "step_time_s", "examples_per_s", "flops_per_step", "grad_norm"):
    assert key in m
  assert m["flops_per_step"] > 0
  assert os.listdir(os.path.join(workdir, "dit", "tb"))
  with open(os.path.join(workdir, "report.json")) as f:
    on_disk = json.load(f)
  assert on_disk["vae"]["psnr_db"] == pytest.approx(report["vae"]["psnr_db"])
  assert report["real_heldout"]["all_correct_rate"] >= 0.99
  config = trained[0]
  # The judge on the VAE's reconstructions of the PSNR's clips, beside the PSNR.
  judged = on_disk["vae"]["judged"]
  assert judged["num_videos"] == report["vae"]["num_clips"] == config.eval.num_recon
  for key in ("all_correct_rate", "color_accuracy", "shape_accuracy", "direction_accuracy"):
    assert 0.0 <= judged[key] <= 1.0
  # Every generated set, judged and written under eval/<name>/; paraphrase_gap compares held-out with reworded.
  sizes = {"heldout": config.eval.num_prompts, "train": config.eval.num_prompts,
           "two_object": config.eval.num_two_object, "paraphrase": config.eval.num_paraphrase}
  for name, size in sizes.items():
    assert on_disk[f"generated_{name}"]["num_videos"] == size > 0
    with open(os.path.join(workdir, "eval", name, "index.json")) as f:
      assert [e["prompt"] for e in json.load(f)] == evaluate_lib.prompt_sets(config)[name]
  assert on_disk["paraphrase_gap"] == pytest.approx(
      report["generated_heldout"]["all_correct_rate"] - report["generated_paraphrase"]["all_correct_rate"])
  # Per trained stage: its steps, the FLOPs they ran (flops_per_step is constant on Shapes) and the peak.
  for stage in ("vae", "dit"):
    summary = on_disk["training"][f"train_{stage}"]
    steps = getattr(config, f"train_{stage}").steps
    last = helpers.read_metrics(os.path.join(workdir, stage, "metrics.jsonl"))[-1]
    assert summary["steps"] == steps and summary["flops"] == pytest.approx(steps * last["flops_per_step"])
    assert summary["matmul_peak_tflops"] > 0 and "measured" in summary["peak_source"]
  text = main_lib.format_report(report)
  assert "judge, VAE reconstructions" in text and "two-object" in text and "paraphrased" in text
  assert f"train_dit: {config.train_dit.steps} steps" in text and "TFLOP/s" in text
  vae_only = main_lib.run(config, workdir, "evaluate_vae", progress=False)
  assert vae_only["vae"]["psnr_db"] == pytest.approx(report["vae"]["psnr_db"], abs=1e-6)
  assert vae_only["vae"]["judged"] == pytest.approx(report["vae"]["judged"], abs=1e-6, nan_ok=True)


def test_same_seed_same_bytes(trained, tmp_path):
  config, workdir, _ = trained
  prompts = ["a red circle moving left", ""]
  gen = generate_lib.Generator(config, workdir)
  a = generate_lib.write_videos(str(tmp_path / "a"), gen.generate(prompts, seed=3, progress=False), prompts,
                                gen.settings(3), fps=8)
  b_videos = generate_lib.Generator(config, workdir).generate(prompts, seed=3, progress=False)
  generate_lib.write_videos(str(tmp_path / "b"), b_videos, prompts, gen.settings(3), fps=8)
  for entry in a:
    assert (tmp_path / "a" / entry["file"]).read_bytes() == (tmp_path / "b" / entry["file"]).read_bytes()
  other = gen.generate(prompts, seed=4, progress=False)
  assert not np.array_equal(other, b_videos)
  index = json.loads((tmp_path / "a" / "index.json").read_text())
  assert [e["prompt"] for e in index] == prompts and index[1]["seed"] == 4


def test_latent_cache_is_rebuilt_when_what_it_encodes_changes(trained, tmp_path):
  config, workdir, _ = trained
  copy = str(tmp_path / "run")
  shutil.copytree(workdir, copy)
  first = dit_trainer.build_latent_cache(config, copy, progress=False)
  stamp = os.path.getmtime(os.path.join(copy, "dit", "latent_cache.npz"))
  again = dit_trainer.build_latent_cache(config, copy, progress=False)  # unchanged: read back, not rebuilt
  assert os.path.getmtime(os.path.join(copy, "dit", "latent_cache.npz")) == stamp
  np.testing.assert_array_equal(again["mean"], first["mean"])
  shorter = helpers.load_config(**{"text.max_length": 8})
  rebuilt = dit_trainer.build_latent_cache(shorter, copy, progress=False)  # another tokenizer: rebuilt
  assert rebuilt["ids"].shape == (len(first["ids"]), 8) and set(rebuilt) == {"mean", "std", "ids"}


def test_dit_train_step_shards_batch_and_state_over_8_devices(trained, tmp_path, monkeypatch):
  """One real DiT step (resumed from the trained workdir onto an fsdp=8 mesh): the step sees its batch split
  8 ways, and the state it returns holds each DiT kernel's embed axis split 8 ways."""
  config, workdir, _ = trained
  copy = str(tmp_path / "run")
  shutil.copytree(workdir, copy)
  config = helpers.load_config(**{"train_dit.steps": 41, "train_dit.log_every": 1, "mesh.data": 1, "mesh.fsdp": 8,
                                  "train_vae.steps": 30, "train_dit.lr": 2e-3, "train_dit.warmup_steps": 5})
  seen = {}
  real_loss = dit_trainer.dit_loss

  def spied_loss(*args, **kwargs):
    loss_fn = real_loss(*args, **kwargs)

    def loss(params, batch, rng, frozen=None):
      for name in ("ids", "video"):
        jax.debug.inspect_array_sharding(batch[name], callback=lambda s, name=name: seen.setdefault(name, s))
      return loss_fn(params, batch, rng, frozen)
    return loss
  monkeypatch.setattr(dit_trainer, "dit_loss", spied_loss)
  mesh = mesh_lib.create_mesh(config.mesh)
  assert dict(mesh.shape) == {"data": 1, "fsdp": 8, "context": 1, "tensor": 1}
  state = dit_trainer.train_dit(config, copy, mesh, progress=False)
  assert int(state.step) == 41 and len(helpers.read_metrics(os.path.join(copy, "dit", "metrics.jsonl"))) > 8
  for name, shape in (("ids", (8, config.text.max_length)), ("video", (8, 9, 32, 32, 3))):
    assert seen[name].shard_shape(shape)[0] == 1, (name, seen[name])  # 8 rows over 8 devices
  kernel = state.params["dit"]["blocks"]["self_attn"]["q"]["kernel"]  # [layers, embed, heads x head_dim]
  assert kernel.sharding.shard_shape(kernel.shape)[1] == kernel.shape[1] // 8, kernel.sharding
  assert build.latent_grid(config) == (3, 4, 4)


def test_generate_at_another_size_and_length(trained, tmp_path):
  config, workdir, _ = trained
  result = main_lib.run(config, workdir, "generate", ["a red circle moving left"], out_dir=str(tmp_path),
                        progress=False, size="48x32", frames=5)
  video, _ = video_io.read_video(str(tmp_path / result["index"][0]["file"]))
  assert video.shape == (5, 4 * 32, 4 * 48, 3)  # written 4x enlarged for viewing
  with pytest.raises(config_validation.ConfigError, match="--size=50x32.*data.width"):
    main_lib.run(config, workdir, "generate", ["x"], out_dir=str(tmp_path), size="50x32")
  with pytest.raises(config_validation.ConfigError, match="--size='big' is invalid"):
    main_lib.run(config, workdir, "generate", ["x"], out_dir=str(tmp_path), size="big")
  with pytest.raises(config_validation.ConfigError, match="data.num_frames.*1 \\+ 4k"):
    main_lib.run(config, workdir, "generate", ["x"], out_dir=str(tmp_path), frames=6)


def test_a_second_generate_into_the_same_directory_keeps_the_first(trained, tmp_path):
  config, workdir, _ = trained
  out = str(tmp_path / "out")
  first = main_lib.run(config, workdir, "generate", ["a red circle moving left"], out_dir=out, progress=False)
  first_file = os.path.join(out, first["index"][0]["file"])
  first_bytes = open(first_file, "rb").read()
  second = main_lib.run(config, workdir, "generate", ["a red circle moving left", "a blue square"], out_dir=out,
                        progress=False, seed=5)
  index = json.loads(open(os.path.join(out, "index.json")).read())
  assert [e["prompt"] for e in index] == ["a red circle moving left", "a red circle moving left", "a blue square"]
  assert len({e["file"] for e in index}) == 3 and index[1:] == second["index"] and index[1]["seed"] == 5
  assert open(first_file, "rb").read() == first_bytes
  assert all(os.path.exists(os.path.join(out, e["file"])) for e in index)
  with open(os.path.join(out, "index.json"), "w") as f:
    f.write("{not json")
  with pytest.raises(generate_lib.OutputDirError, match="index.json is not a readable index"):
    main_lib.run(config, workdir, "generate", ["a green triangle"], out_dir=out, progress=False)
  assert sorted(os.listdir(out)) == sorted([e["file"] for e in index] + ["index.json", "grid.png"])


def test_muon_orthogonalises_hidden_kernels_and_leaves_the_rest_to_adamw():
  from vidgen.train import state as state_lib
  assert state_lib.OPTIMIZERS == ("adamw", "muon")  # the names config_validation allows
  rng = np.random.default_rng(0)
  params = {"blocks": {"ffn": {"kernel": rng.normal(size=(2, 16, 8)).astype(np.float32)}},
            "patch_embedding": {"kernel": rng.normal(size=(16, 8)).astype(np.float32)},
            "norm": {"weight": np.ones(8, np.float32)}}
  grads = jax.tree_util.tree_map(lambda x: rng.normal(size=x.shape).astype(np.float32), params)
  tx = state_lib.make_optimizer(1e-3, 10, 0, optimizer="muon", muon_lr=0.02)
  _, opt_state = tx.update(grads, tx.init(params), params)  # step 0: the warm-up's rate is 0
  updates, _ = tx.update(grads, opt_state, params)
  # Each stacked layer's update is near-orthogonal (Newton-Schulz flattens its singular values); with the same
  # gradient twice AdamW's step is lr * sign(grad) everywhere else.
  for layer in np.asarray(updates["blocks"]["ffn"]["kernel"]):
    sv = np.linalg.svd(layer, compute_uv=False)
    assert sv.min() > 0.5 * sv.max()
  for leaf in (updates["patch_embedding"]["kernel"], updates["norm"]["weight"]):
    np.testing.assert_allclose(np.abs(np.asarray(leaf)), np.abs(np.asarray(leaf)).max(), rtol=1e-3)
  # muon_modules limits Muon to the named top-level modules: here none of the kernels, so AdamW everywhere.
  tx = state_lib.make_optimizer(1e-3, 10, 0, optimizer="muon", muon_modules=("text",))
  _, opt_state = tx.update(grads, tx.init(params), params)
  updates, _ = tx.update(grads, opt_state, params)
  leaf = np.abs(np.asarray(updates["blocks"]["ffn"]["kernel"]))
  np.testing.assert_allclose(leaf, leaf.max(), rtol=1e-3)


def test_muon_trains_the_dit_on_an_fsdp_mesh(trained, tmp_path):
  """A fresh DiT run with optimizer='muon' on fsdp=8: its masked optimizer state (optax.MaskedNode where a
  parameter is AdamW's) gets shardings, and the steps run. Trained without an EMA (as `tiny` is), its raw
  weights load, and asking for the EMA is one clear error."""
  config, workdir, _ = trained
  copy = str(tmp_path / "run")
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("dit"))
  config = helpers.load_config(**{"train_dit.steps": 3, "train_dit.log_every": 1, "mesh.data": 1, "mesh.fsdp": 8,
                                  "train_vae.steps": 30, "train_dit.optimizer": "muon", "train_dit.ema_decay": 0.0})
  state = dit_trainer.train_dit(config, copy, mesh_lib.create_mesh(config.mesh), progress=False)
  assert int(state.step) == 3
  assert all(np.isfinite(m["loss"]) for m in helpers.read_metrics(os.path.join(copy, "dit", "metrics.jsonl")))
  assert load.denoiser_params(copy, use_ema=False) is not None
  with pytest.raises(ValueError, match="holds no EMA .* use_ema=False"):
    load.denoiser_params(copy, use_ema=True)


def test_drop_words_keeps_order_and_closes_gaps():
  ids = jnp.asarray(np.tile([[5, 6, 7, 8, 9, 0, 0, 0]], (256, 1)), jnp.int32)
  out = np.asarray(dit_trainer.drop_words(jax.random.key(0), ids, 0.3))
  kept = out != 0
  assert (kept[:, :-1] >= kept[:, 1:]).all()  # the words left come first, padding after
  for row in out:
    words = row[row != 0].tolist()
    assert words == sorted(words) and set(words) <= {5, 6, 7, 8, 9}  # a subsequence, in order
  assert abs(1 - kept.sum() / (256 * 5) - 0.3) < 0.05
  np.testing.assert_array_equal(np.asarray(dit_trainer.drop_words(jax.random.key(0), ids, 0.0)), ids)

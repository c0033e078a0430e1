"""The command line and config checks: bad input fails early with one line naming the field."""
import os
import re
import subprocess
import sys

import pytest

from tests import helpers
from vidgen import config_validation
from vidgen import main as main_lib
from vidgen.models import load


@pytest.mark.parametrize("overrides,needle", [
    ({"data.num_frames": 8}, "config.data.num_frames=8"),
    ({"data.height": 36}, "config.data.height=36"),
    ({"train_dit.steps": -1}, "config.train_dit.steps=-1"),
    ({"sample.solver": "rk9"}, "config.sample.solver='rk9'"),
    ({"dit.num_heads": 5}, "config.dit.num_heads=5"),
    ({"vae.temporal_kernel": 2}, "config.vae.temporal_kernel=2"),
    ({"eval.num_two_object": -1}, "config.eval.num_two_object=-1"),
    ({"dit.pos_embed": "learned"}, "config.dit.pos_embed='learned'"),
    ({"dit.rope_theta": 0.5}, "config.dit.rope_theta=0.5 is invalid: must be > 1"),
    ({"train_dit.muon_modules": ("vae",)}, "config.train_dit.muon_modules=('vae',) is invalid"),
    ({"text.position": "sincos"}, "config.text.position='sincos' is invalid: allowed ('learned', 'rope')"),
    ({"text.position": "rope", "text.num_heads": 32}, "config.text.num_heads=32 is invalid: text.position='rope'"),
    ({"train_dit.word_dropout": 1.0}, "config.train_dit.word_dropout=1.0 is invalid: must be in [0, 1)"),
    ({"train_dit.optimizer": "lion"}, "config.train_dit.optimizer='lion' is invalid: allowed ('adamw', 'muon')"),
    ({"dit.patch_size": (1, 2, 2, 3, 2, 2)}, "config.dit.patch_size=(1, 2, 2, 3, 2, 2) is invalid: allowed three"),
    ({"vae.level_shortcuts": True, "vae.dim_mult": (1, 3, 2)}, "config.vae.dim_mult=(1, 3, 2) is invalid: vae.level"),
])
def test_invalid_fields_fail_before_anything_runs(tmp_path, overrides, needle):
  config = helpers.load_config(**overrides)
  with pytest.raises(config_validation.ConfigError, match=re.escape(needle)):
    main_lib.run(config, str(tmp_path), "all", progress=False)
  assert not os.listdir(tmp_path)  # nothing built, nothing compiled


def test_batch_not_divisible_by_mesh_fails_early(tmp_path):
  config = helpers.load_config(**{"train_dit.batch_size": 12})  # 8 faked devices
  with pytest.raises(config_validation.ConfigError, match="train_dit.batch_size=12.*divisible by"):
    main_lib.run(config, str(tmp_path), "all", progress=False)
  config = helpers.load_config(**{"mesh.fsdp": 3})
  with pytest.raises(config_validation.ConfigError, match="config.mesh"):
    main_lib.run(config, str(tmp_path), "all", progress=False)


def test_all_presets_validate():
  for preset in ("tiny", "small", "test"):
    config_validation.validate(helpers.load_config(preset))


def test_generate_without_checkpoint_names_workdir_and_mode(tmp_path):
  with pytest.raises(load.MissingCheckpointError, match=r"--mode=train_vae"):
    main_lib.run(helpers.load_config(), str(tmp_path), "generate", prompts=["a red circle moving left"])
  with pytest.raises(load.MissingCheckpointError, match=re.escape(str(tmp_path)) + ".*--mode=train_vae"):
    main_lib.run(helpers.load_config(), str(tmp_path), "evaluate_vae")


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "vidgen.main", *args], capture_output=True, text=True,
                        cwd=helpers.ROOT, timeout=120)


def test_cli_unknown_preset_missing_file_and_bad_field_are_one_line(tmp_path):
  for args, needle in ((["--config=configs/shapes.py:huge"], "error: --config: Unknown preset 'huge'"),
                       (["--config=configs/nope.py"], "error: --config=configs/nope.py: no such file"),
                       (["--config=configs/shapes.py:test", "--config.data.num_frames=6"],
                        "error: config.data.num_frames=6")):
    out = _cli(*args, f"--workdir={tmp_path}")
    assert out.returncode == 2 and out.stderr.strip().startswith(needle), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
  assert "tiny" in _cli("--config=configs/shapes.py:huge", f"--workdir={tmp_path}").stderr


def test_cli_prints_vidgen_lines_only_unless_verbose(tmp_path):
  quiet = _cli("--config=configs/shapes.py:test", f"--workdir={tmp_path / 'a'}", "--mode=data")
  assert quiet.returncode == 0, quiet.stderr
  for noise in ("Downloading and preparing", "ShapesConfig", "Generating splits"):
    assert noise not in quiet.stdout + quiet.stderr
  verbose = _cli("--config=configs/shapes.py:test", f"--workdir={tmp_path / 'b'}", "--mode=data", "-v", "0")
  assert verbose.returncode == 0 and "Downloading and preparing" in verbose.stdout + verbose.stderr


def test_cli_generate_without_checkpoint(tmp_path):
  out = _cli("--config=configs/shapes.py:test", f"--workdir={tmp_path}", "--mode=generate", "--prompt=a red ball")
  assert out.returncode == 2 and str(tmp_path) in out.stderr and "--mode=train_vae" in out.stderr

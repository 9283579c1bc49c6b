"""Checkpoints: exact resume, killed saves, other meshes, mismatches, init."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from electra_jax import checkpointing
from electra_jax import errors
from electra_jax import loop
from electra_jax import pretrained
from tests import testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp("default_data"))


def final_params(workdir):
  _, params, step = pretrained.restore_params(str(workdir))
  return jax.device_get(params), step


def assert_bitwise_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_cache):
  workdir = tmp_path_factory.mktemp("full")
  loop.train_and_evaluate(testing.tiny_config(data_cache), str(workdir))
  return workdir


def test_preempted_run_resumes_bitwise(tmp_path, data_cache, uninterrupted,
                                       monkeypatch):
  """Stopped at step 3 (as a signal would), resumed to 6: equal params."""
  original = loop.PreemptionWatch.should_stop
  monkeypatch.setattr(loop.PreemptionWatch, "should_stop",
                      lambda self, m, step: step == 3 or original(self, m,
                                                                  step))
  loop.train_and_evaluate(testing.tiny_config(data_cache), str(tmp_path))
  monkeypatch.undo()
  assert final_params(tmp_path)[1] == 3
  input_state = json.loads(
      (tmp_path / "checkpoints" / "3" / "input" / "metadata").read_text())
  assert input_state["batch_index"] == 3  # The next batch to read.
  loop.train_and_evaluate(testing.tiny_config(data_cache), str(tmp_path))
  resumed, step = final_params(tmp_path)
  want, want_step = final_params(uninterrupted)
  assert step == want_step == 6
  assert_bitwise_equal(resumed, want)


def test_resume_on_another_mesh_gives_the_same_params(tmp_path, data_cache,
                                                      uninterrupted):
  shutil.copytree(uninterrupted, tmp_path / "run")
  config = testing.tiny_config(data_cache)
  config.sharding.mesh_data = 1
  config.sharding.mesh_fsdp = -1  # Saved data-parallel, restored FSDP.
  _, spec = loop.prepare_data(config)
  from electra_jax import sharding, train  # pylint: disable=g-import-not-at-top
  mesh, rules = train.mesh_and_rules(config)
  with sharding.use(mesh, rules):
    built = train.build(config, spec, mesh, rules, jax.random.key(9))
    manager = checkpointing.make_manager(str(tmp_path / "run"))
    state, input_state = checkpointing.restore_or_initialize(
        manager, loop.run_record(config, spec), built.state,
        built.state_shardings)
    manager.close()
  assert int(state.step) == 6 and input_state["batch_index"] == 6
  kernel = state.params["discriminator"]["encoder"]["layer_0"]["query"][
      "kernel"]
  assert kernel.sharding.spec[0] == "fsdp"
  assert kernel.addressable_shards[0].data.shape[0] == kernel.shape[0] // 8
  assert_bitwise_equal(jax.device_get(state.params),
                       final_params(uninterrupted)[0])


def test_incomplete_save_is_never_resumed(tmp_path, data_cache,
                                          uninterrupted):
  run = tmp_path / "run"
  shutil.copytree(uninterrupted, run)
  # A save killed midway leaves orbax's temporary directory behind.
  partial = run / "checkpoints" / "8.orbax-checkpoint-tmp"
  shutil.copytree(run / "checkpoints" / "6", partial)
  (partial / "params" / "manifest.ocdbt").write_bytes(b"truncated")
  manager = checkpointing.make_manager(str(run))
  assert manager.latest_step() == 6
  manager.close()


def test_mismatched_config_fails_and_changes_nothing(tmp_path, data_cache,
                                                     uninterrupted):
  run = tmp_path / "run"
  shutil.copytree(uninterrupted, run)
  before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
  config = testing.tiny_config(data_cache, steps=8)
  config.model.hidden_size = 96
  with pytest.raises(ValueError, match="model.hidden_size: checkpoint 64, "
                     "config 96"):
    loop.train_and_evaluate(config, str(run))
  after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
  assert before == after


def test_init_from_another_run_and_from_an_export(tmp_path, data_cache,
                                                  uninterrupted):
  want, _ = final_params(uninterrupted)
  config = testing.tiny_config(data_cache, steps=1)
  config.init_from = str(uninterrupted)
  config.optimizer.learning_rate = 0.0  # The one step must change nothing.
  loop.train_and_evaluate(config, str(tmp_path / "a"))
  got, step = final_params(tmp_path / "a")
  assert step == 1  # A new run: step, optimizer and data start fresh.
  assert_bitwise_equal(got, want)

  from electra_jax import export  # pylint: disable=g-import-not-at-top
  export.export(str(uninterrupted), str(tmp_path / "export"))
  config.init_from = str(tmp_path / "export")
  loop.train_and_evaluate(config, str(tmp_path / "b"))
  got, _ = final_params(tmp_path / "b")
  assert_bitwise_equal(got, want)


def test_continued_pretraining_on_new_text_with_the_runs_tokenizer(
    tmp_path, data_cache, uninterrupted):
  """Domain-adaptive pretraining as the README gives it: new text encoded
  with the run's own tokenizer, then a new workdir with `init_from`."""
  from electra_jax.data import options as options_lib  # pylint: disable=g-import-not-at-top
  from electra_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  tokenizer = uninterrupted / "tokenizer" / "tokenizer.model"
  text = tmp_path / "reviews.txt"
  text.write_text("".join(
      f"The film was {w} and the cast was {v}.\n\n"
      for w in ("dull", "bright", "long", "odd", "warm", "slow")
      for v in ("good", "tired", "fine", "new")))
  data_dir = tmp_path / "reviews"
  preprocess.preprocess(options_lib.Options(
      inputs=(str(text),), output_dir=str(data_dir), tokenizer=str(tokenizer),
      max_seq_length=32, eval_fraction=0.3, num_workers=1))
  assert (data_dir / "tokenizer.model").read_bytes() == tokenizer.read_bytes()
  want, _ = final_params(uninterrupted)
  config = testing.tiny_config(data_cache, steps=1)
  config.input.data_dir = str(data_dir)
  config.init_from = str(uninterrupted)
  config.optimizer.learning_rate = 0.0  # The one step must change nothing.
  loop.train_and_evaluate(config, str(tmp_path / "adapted"))
  got, step = final_params(tmp_path / "adapted")
  assert step == 1
  assert_bitwise_equal(got, want)


def _cli(workdir, data_cache, save_every):
  """The command line of a tiny run on one CPU device, and its env."""
  args = [sys.executable, "-m", "electra_jax.main",
          "--config=configs/tiny.py", f"--workdir={workdir}",
          f"--config.input.default_data_cache={data_cache}",
          "--config.input.default_corpus_bytes=300000",
          "--config.input.default_vocab_size=1000",
          "--config.input.batch_size=8", "--config.input.max_seq_length=32",
          "--config.log_every_steps=1", "--config.eval.every_steps=0",
          f"--config.checkpoint.every_steps={save_every}",
          "--config.checkpoint.every_minutes=0"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  env.pop("XLA_FLAGS", None)
  return args, env


def _start_and_wait_for_step(args, env, step):
  proc = subprocess.Popen(args, cwd=ROOT, env=env, stderr=subprocess.PIPE,
                          text=True)
  deadline = time.time() + 300
  for line in proc.stderr:
    if f"step {step}/" in line or time.time() > deadline:
      break
  return proc


def test_sigterm_saves_and_exits_cleanly(tmp_path, data_cache):
  """A real signal to a real run: it saves at a step boundary and exits 0;
  the rerun finishes from there."""
  args, env = _cli(tmp_path, data_cache, save_every=0)
  proc = _start_and_wait_for_step(args + ["--config.num_train_steps=100000"],
                                  env, 2)
  proc.send_signal(signal.SIGTERM)
  rest = proc.stderr.read()
  assert proc.wait(timeout=120) == 0, rest[-3000:]
  assert "Received SIGTERM" in rest and "Stopped at step" in rest
  manager = checkpointing.make_manager(str(tmp_path), read_only=True)
  step = manager.latest_step()
  assert step is not None and step >= 2
  restored = manager.restore(step, args=ocp.args.Composite(
      input=ocp.args.JsonRestore()))
  assert restored["input"]["batch_index"] == step


def test_sigkill_during_saves_resumes_from_a_complete_step(tmp_path,
                                                           data_cache):
  """SIGKILL while a save is (most likely) in flight: every step saves
  asynchronously, so the kill lands during one. The rerun resumes from the
  last complete checkpoint and finishes."""
  args, env = _cli(tmp_path, data_cache, save_every=1)
  proc = _start_and_wait_for_step(args + ["--config.num_train_steps=100000"],
                                  env, 4)
  proc.kill()
  proc.wait(timeout=60)
  manager = checkpointing.make_manager(str(tmp_path), read_only=True)
  last = manager.latest_step()
  manager.close()
  assert last is not None and last >= 1
  # Resume (same config) and finish two steps later.
  rerun = subprocess.run(args + [f"--config.num_train_steps={last + 2}"],
                         cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600, check=False)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f"checkpoints/{last}." in rerun.stderr
  assert final_params(tmp_path)[1] == last + 2


def test_profiler_window_writes_a_trace(tmp_path, data_cache):
  config = testing.tiny_config(data_cache, steps=3)
  config.profile_start_step = 2
  config.profile_num_steps = 1
  loop.train_and_evaluate(config, str(tmp_path))
  traces = list((tmp_path / "profile").rglob("*.xplane.pb"))
  assert traces and traces[0].stat().st_size > 0


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    tmp_path, data_cache, monkeypatch):
  config = testing.tiny_config(data_cache, steps=4)
  config.checkpoint.every_steps = 1
  config.num_train_steps = 2
  loop.train_and_evaluate(config, str(tmp_path))  # Steps 1-2 are fine.
  good, _ = final_params(tmp_path)
  from electra_jax import objective  # pylint: disable=g-import-not-at-top
  total = objective.electra_loss
  monkeypatch.setattr(objective, "electra_loss",
                      lambda *a, **k: total(*a, **k) * float("nan"))
  config.num_train_steps = 4
  with pytest.raises(FloatingPointError, match="Non-finite loss .* step 3"):
    loop.train_and_evaluate(config, str(tmp_path))
  params, step = final_params(tmp_path)
  assert step == 2  # Nothing was saved after the loss went bad.
  assert_bitwise_equal(params, good)


def test_resuming_with_another_optimizer_is_a_clear_error(tmp_path,
                                                          data_cache):
  loop.train_and_evaluate(testing.tiny_config(data_cache, steps=2),
                          str(tmp_path))
  config = testing.tiny_config(data_cache, steps=4)
  config.optimizer.optimizer = "lamb"  # Another opt_state structure.
  with pytest.raises(ValueError, match=r"optimizer state in .*optimizer='lamb'"
                     r".*init_from="):
    loop.train_and_evaluate(config, str(tmp_path))


def test_settings_that_only_choose_the_start_do_not_block_a_resume():
  saved = {"model": {"hidden_size": 8, "hidden_dropout_prob": 0.1}}
  current = {"model": {"hidden_size": 8, "hidden_dropout_prob": 0.0,
                       "position_embedding_init": "sinusoidal",
                       "dtype": "bfloat16"}}
  checkpointing.check_compatible(saved, current, "w")  # A run before the key.
  current["model"]["hidden_size"] = 16
  with pytest.raises(errors.UserError,
                     match=r"model.hidden_size: checkpoint 8, config 16\)"):
    checkpointing.check_compatible(saved, current, "w")

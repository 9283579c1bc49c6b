"""When `runtime.initialize_distributed` joins a multi-process run, and how.

Nothing here needs a cluster: the environment variables, JAX's Cloud TPU
flag and its metadata-server lookup are faked, and
`jax.distributed.initialize` is replaced by a recorder. Where the run is
joined by auto-detection, the recorder also runs JAX's own detection on the
same fakes, so the process count decided here is the one JAX would use.
"""

import os

import jax
from jax._src import clusters
from jax._src.clusters import cloud_tpu_cluster
import pytest

from electra_jax import runtime

CLEARED = ("SLURM_", "OMPI_", "TPU_", "MEGASCALE_", "JAX_", "KUBERNETES_",
           "JOB_COMPLETION_INDEX", runtime.DISTRIBUTED_ENV)


@pytest.fixture
def calls(monkeypatch):
  """The kwargs of each `jax.distributed.initialize` call, in a list."""
  # Also drops TPU_SKIP_MDS_QUERY, which importing jax sets on a machine
  # without TPU chips.
  for name in list(os.environ):
    if name.startswith(CLEARED):
      monkeypatch.delenv(name)
  monkeypatch.setattr(cloud_tpu_cluster, "running_in_cloud_tpu_vm", False)
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  recorded = []

  def initialize(**kwargs):
    recorded.append(kwargs)
    if "num_processes" not in kwargs:  # Auto-detected: what would JAX find?
      _, num, pid, _ = clusters.ClusterEnv.auto_detect_unset_distributed_params(
          kwargs.get("coordinator_address"), None, None,
          kwargs.get("local_device_ids"), None, 1)
      kwargs["jax_found"] = (num, pid)
  monkeypatch.setattr(jax.distributed, "initialize", initialize)
  return recorded


@pytest.fixture
def tpu_vm(monkeypatch):
  """A Cloud TPU VM made by gcloud; returns its metadata (edit to taste)."""
  monkeypatch.setattr(cloud_tpu_cluster, "running_in_cloud_tpu_vm", True)
  monkeypatch.setattr(cloud_tpu_cluster.BaseTpuCluster, "wait_for_coordinator",
                      classmethod(lambda cls, address, timeout: None))
  metadata = {"agent-worker-number": "0",
              "worker-network-endpoints": "t1-w-0:0:10.0.0.2", "tpu-env": ""}

  def get_metadata(key):
    if key not in metadata:
      return "not found", 404
    return metadata[key], 200
  monkeypatch.setattr(cloud_tpu_cluster, "get_metadata", get_metadata)
  return metadata


def _set(monkeypatch, **env):
  for name, value in env.items():
    monkeypatch.setenv(name, str(value))


def test_one_plain_process_does_nothing(calls):
  runtime.initialize_distributed()
  assert not calls and runtime.detect_cluster() is None


def test_explicit_coordinator(calls, monkeypatch):
  _set(monkeypatch, JAX_COORDINATOR_ADDRESS="10.0.0.1:1234",
       JAX_NUM_PROCESSES=4, JAX_PROCESS_ID=3, JAX_LOCAL_DEVICE_IDS="0,1")
  runtime.initialize_distributed()
  assert calls == [dict(coordinator_address="10.0.0.1:1234", num_processes=4,
                        process_id=3, local_device_ids=[0, 1])]


def test_override_off_wins(calls, monkeypatch):
  _set(monkeypatch, JAX_COORDINATOR_ADDRESS="h:1", JAX_NUM_PROCESSES=2,
       JAX_PROCESS_ID=0, SLURM_JOB_ID=7, SLURM_STEP_NODELIST="n[1-2]",
       SLURM_NTASKS=2, SLURM_PROCID=0, SLURM_LOCALID=0,
       ELECTRA_JAX_DISTRIBUTED=0)
  runtime.initialize_distributed()
  assert not calls


def test_override_on_without_a_cluster(calls, monkeypatch):
  _set(monkeypatch, ELECTRA_JAX_DISTRIBUTED=1, KUBERNETES_SERVICE_HOST="k")
  # Generic Kubernetes is never probed (API calls); the override asks JAX.
  monkeypatch.setattr(clusters.K8sCluster, "is_env_present",
                      classmethod(lambda cls: False))
  runtime.initialize_distributed()
  assert calls == [dict(coordinator_address=None, local_device_ids=None,
                        jax_found=(None, None))]


def test_bad_override(calls, monkeypatch):
  _set(monkeypatch, ELECTRA_JAX_DISTRIBUTED="yes")
  with pytest.raises(ValueError, match="ELECTRA_JAX_DISTRIBUTED='yes'"):
    runtime.initialize_distributed()
  assert not calls


def test_already_initialized(calls, monkeypatch):
  _set(monkeypatch, JAX_COORDINATOR_ADDRESS="h:1", JAX_NUM_PROCESSES=2,
       JAX_PROCESS_ID=0)
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
  runtime.initialize_distributed()
  assert not calls


SRUN = dict(SLURM_JOB_ID=5000, SLURM_STEP_NODELIST="gpu[007-008]",
            SLURM_PROCID=9, SLURM_LOCALID=1)


def test_slurm_srun_several_tasks(calls, monkeypatch):
  # gpu_slurm.sbatch exports the coordinator; --per_node the device ids.
  _set(monkeypatch, SLURM_NTASKS=16, JAX_COORDINATOR_ADDRESS="gpu007:62344",
       **SRUN)
  assert runtime.detect_cluster() == ("SlurmCluster", 16)
  runtime.initialize_distributed()
  assert calls == [dict(coordinator_address="gpu007:62344",
                        local_device_ids=None, jax_found=(16, 9))]
  calls.clear()
  _set(monkeypatch, JAX_LOCAL_DEVICE_IDS="0,1,2,3")
  runtime.initialize_distributed()
  assert calls[0]["local_device_ids"] == [0, 1, 2, 3]


def test_slurm_single_task_or_batch_step(calls, monkeypatch):
  _set(monkeypatch, SLURM_NTASKS=1, **SRUN)
  runtime.initialize_distributed()
  assert not calls
  # The batch script itself (no srun step): JAX sees no Slurm cluster, so
  # neither initialize nor a hang waiting for 16 peers.
  monkeypatch.delenv("SLURM_STEP_NODELIST")
  _set(monkeypatch, SLURM_NTASKS=16)
  runtime.initialize_distributed()
  assert not calls


def test_open_mpi(calls, monkeypatch):
  _set(monkeypatch, OMPI_MCA_orte_hnp_uri="1531576320.0;tcp://10.96.0.1:3491",
       OMPI_COMM_WORLD_SIZE=4, OMPI_COMM_WORLD_RANK=2,
       OMPI_COMM_WORLD_LOCAL_RANK=0)
  runtime.initialize_distributed()
  assert calls[0]["jax_found"] == (4, 2)


def test_single_host_tpu_vm_does_nothing(calls, tpu_vm):
  del tpu_vm  # One worker, as on a v4-8, v5litepod-8 or v6e-8.
  assert runtime.detect_cluster() == ("GceTpuCluster", 1)
  runtime.initialize_distributed()
  assert not calls


@pytest.mark.parametrize("endpoints", [
    "t1-w-0:0:10.0.0.2,t1-w-1:1:10.0.0.3,t1-w-2:2:10.0.0.4,t1-w-3:3:10.0.0.5",
    "t1-w-0,t1-w-1,t1-w-2,t1-w-3"])  # JAX reads both formats.
def test_gcloud_tpu_pod_slice_joins(calls, tpu_vm, endpoints, monkeypatch):
  # What a gcloud-made v4-32 has: peers only in the metadata server, none
  # of the TPU_WORKER_* variables that GKE sets.
  tpu_vm.update({"worker-network-endpoints": endpoints,
                 "agent-worker-number": "2"})
  assert runtime.detect_cluster() == ("GceTpuCluster", 4)
  runtime.initialize_distributed()
  assert calls == [dict(coordinator_address=None, local_device_ids=None,
                        jax_found=(4, 2))]
  calls.clear()
  _set(monkeypatch, TPU_SKIP_MDS_QUERY=1)  # JAX's opt-out is obeyed.
  runtime.initialize_distributed()
  assert not calls


def test_gcloud_multislice_one_host_per_slice(calls, tpu_vm):
  tpu_vm.update({"agent-worker-number": "0",
                 "tpu-env": "MEGASCALE_NUM_SLICES: '2'\n"
                            "MEGASCALE_SLICE_ID: '1'\n"
                            "MEGASCALE_COORDINATOR_ADDRESS: '10.0.0.9'"})
  assert runtime.detect_cluster() == ("GceTpuCluster", 2)
  runtime.initialize_distributed()
  assert calls[0]["jax_found"] == (2, 1)


def test_gke_tpu_uses_no_metadata(calls, monkeypatch):
  monkeypatch.setattr(cloud_tpu_cluster, "running_in_cloud_tpu_vm", True)
  monkeypatch.setattr(cloud_tpu_cluster.BaseTpuCluster, "wait_for_coordinator",
                      classmethod(lambda cls, address, timeout: None))
  # JAX asks the metadata server first (GceTpuCluster comes before
  # GkeTpuCluster); say a GKE pod gets a 404 there. The process count must
  # then come from the environment alone.
  monkeypatch.setattr(cloud_tpu_cluster, "get_metadata",
                      lambda key: ("", 404))
  _set(monkeypatch, TPU_WORKER_HOSTNAMES="localhost", TPU_WORKER_ID=0)
  assert runtime.detect_cluster() == ("GkeTpuCluster", 1)
  runtime.initialize_distributed()
  assert not calls
  _set(monkeypatch, TPU_WORKER_HOSTNAMES="w-0.s,w-1.s", TPU_WORKER_ID=1,
       MEGASCALE_NUM_SLICES=2, MEGASCALE_SLICE_ID=1)
  assert runtime.detect_cluster() == ("GkeTpuCluster", 4)
  runtime.initialize_distributed()
  assert calls[0]["jax_found"] == (4, 3)


def test_tpu_hostnames_off_a_tpu_vm_mean_nothing(calls, monkeypatch):
  # The old rule joined on a comma in TPU_WORKER_HOSTNAMES alone; JAX only
  # trusts it on a Cloud TPU VM, and initialize() would find no cluster.
  _set(monkeypatch, TPU_WORKER_HOSTNAMES="a,b")
  runtime.initialize_distributed()
  assert not calls


def test_kubernetes_is_not_probed(calls, monkeypatch):
  def probe(cls):
    raise AssertionError("K8sCluster.is_env_present makes API calls")
  monkeypatch.setattr(clusters.K8sCluster, "is_env_present",
                      classmethod(probe))
  _set(monkeypatch, KUBERNETES_SERVICE_HOST="10.0.0.1")
  runtime.initialize_distributed()
  assert not calls

"""Device mesh, logical axis rules, and the shardings of state and batches.

One code path for every layout: data parallel is `fsdp=tensor=1`; FSDP and
tensor parallel are config changes. Parameters carry logical axis names
(model.py); the rules below map them to the mesh axes
`("data", "fsdp", "tensor")`, as t5x's `standard_logical_axis_rules`.
"""

import contextlib
from typing import Any, Sequence

import flax.linen as nn
import jax
from jax.sharding import AxisType
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

Rules = Sequence[tuple[str, Any]]

# Earlier rules win when two dimensions of one array want the same mesh axis.
DEFAULT_RULES: Rules = (
    ("act_batch", BATCH_AXES),  # Activations: batch over data and fsdp.
    ("vocab", "tensor"),  # Word embeddings and output bias.
    ("mlp", "tensor"),  # Feed-forward and head widths.
    ("joined_kv", "tensor"),  # Attention projections (all heads).
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("embed", "fsdp"),  # Parameters: hidden dim over fsdp (ZeRO-3).
    ("embed_in", None),
    ("act_length", None),
    ("act_embed", None),
)


def make_mesh(shape: Sequence[int],
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A `("data", "fsdp", "tensor")` mesh of `shape`; one size may be -1 to
  fill the remaining devices."""
  devices = list(devices if devices is not None else jax.devices())
  shape = list(shape)
  if shape.count(-1) > 1 or any(d == 0 or d < -1 for d in shape):
    raise ValueError(f"Invalid mesh {dict(zip(MESH_AXES, shape))}: sizes "
                     "must be positive, and at most one may be -1.")
  known = int(np.prod([d for d in shape if d != -1]))
  if -1 in shape:
    if len(devices) % known:
      raise ValueError(f"Cannot fill mesh {dict(zip(MESH_AXES, shape))}: "
                       f"{len(devices)} devices are not a multiple of {known}.")
    shape[shape.index(-1)] = len(devices) // known
  if int(np.prod(shape)) != len(devices):
    raise ValueError(
        f"Mesh {dict(zip(MESH_AXES, shape))} needs {int(np.prod(shape))} "
        f"devices, but {len(devices)} are available. Set one of "
        "--config.sharding.mesh_{data,fsdp,tensor} to -1 to fill.")
  return jax.make_mesh(tuple(shape), MESH_AXES,
                       axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def logical_rules(rules: Rules = ()) -> Rules:
  """`rules` as tuples, or `DEFAULT_RULES` when there are none."""
  return tuple(tuple(r) for r in rules) if rules else DEFAULT_RULES


def _mesh_axes(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
               rules: Rules) -> P:
  """Logical names -> PartitionSpec, leaving indivisible dims replicated."""
  spec = nn.logical_to_mesh_axes(tuple(names), rules)
  out = []
  for dim, axes in zip(shape, spec):
    axes_tuple = (axes,) if isinstance(axes, str) else tuple(axes or ())
    size = int(np.prod([mesh.shape[a] for a in axes_tuple]))
    # An indivisible dim (e.g. a 30522 vocab over 8 devices) stays whole.
    out.append(axes if axes_tuple and dim % size == 0 else None)
  return P(*out)


def tree_shardings(abstract_boxed: Any, mesh: Mesh, rules: Rules) -> Any:
  """`NamedSharding`s for a tree whose leaves may be `LogicallyPartitioned`.

  The result has the structure of `nn.unbox(abstract_boxed)`: boxed leaves
  are sharded by their names, everything else is replicated.
  """
  def one(leaf):
    if isinstance(leaf, nn.LogicallyPartitioned):
      return NamedSharding(
          mesh, _mesh_axes(leaf.names, leaf.value.shape, mesh, rules))
    return NamedSharding(mesh, P())
  return jax.tree.map(one, abstract_boxed,
                      is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def fully_replicated(shardings: Any) -> bool:
  """Whether every sharding in the tree keeps whole copies on all devices."""
  return all(s.is_fully_replicated for s in jax.tree.leaves(shardings))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches are split over `("data", "fsdp")` along their first dim."""
  return NamedSharding(mesh, P(BATCH_AXES))


def check_batch_size(global_batch: int, mesh: Mesh) -> None:
  n = mesh.shape["data"] * mesh.shape["fsdp"]
  if global_batch % n:
    raise ValueError(
        f"input.batch_size={global_batch} is not divisible by the {n} "
        "data-parallel shards (mesh data x fsdp). Change "
        "--config.input.batch_size or the mesh.")


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, Any]:
  """Assembles per-process numpy batches into global sharded arrays."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in local.items()}


@contextlib.contextmanager
def use(mesh: Mesh, rules: Rules):
  """Makes `mesh` and `rules` current, so that the models' logical
  activation constraints resolve while a step is traced."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield

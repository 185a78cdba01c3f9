"""Which Kubernetes extended resources are GPUs, and how many whole GPUs one unit of each is.

GPUs reach Kubernetes through device plugins as extended resources: a pod asks for them in
its limits (a request, if given, must equal the limit), the node lists them in capacity and
allocatable. One definition of "a GPU resource" is shared by the agent (which reads them from
pod and node objects) and the cost processor (which accepts and prices them), so the two
cannot disagree about what a node's GPUs are.

Recognised (the vendors' device-plugin resource names):
  * `nvidia.com/gpu`: a whole NVIDIA GPU (NVIDIA k8s-device-plugin);
  * `nvidia.com/mig-<g>g.<m>gb` (MIG "mixed" strategy): a MIG slice with g compute slices of
    a GPU. A100, H100, H200 and B200 split into 7 compute slices, so one unit is g/7 of a GPU
    (a 7g.80gb slice is the whole GPU). On an A30 (4 slices) this prices a 1g.6gb slice at
    1/7 rather than 1/4 of the GPU: use a per-node `gpu_hour` override there;
  * `amd.com/gpu`: a whole AMD GPU (ROCm k8s-device-plugin);
  * `gpu.intel.com/i915`, `gpu.intel.com/xe`: an Intel GPU (intel-device-plugins-for-kubernetes).
    Its other resources (`millicores`, `memory.max`, `tiles`, `i915_monitoring`) are shares or
    monitoring handles, not devices, and are not counted.
Time-sliced sharing (a device plugin advertising N replicas of each GPU) is indistinguishable
from N GPUs in the node object: such a node's GPUs are counted as the replicas it advertises.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping

WHOLE_GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu", "gpu.intel.com/i915", "gpu.intel.com/xe")
MIG_SLICES_PER_GPU = 7
_MIG = re.compile(r"nvidia\.com/mig-(?P<g>[1-7])g\.(?P<m>[0-9]{1,4})gb(?:\+[a-z0-9.]{1,16})?\Z")


def is_gpu_resource(name: str) -> bool:
    """Whether the extended resource `name` counts GPUs (see the module docstring)."""
    return name in WHOLE_GPU_RESOURCES or _MIG.match(name) is not None


def gpu_equivalents(name: str) -> float:
    """Whole GPUs in one unit of resource `name` (1 for a GPU, g/7 for a MIG slice).
    Raises ValueError for a resource that is not a GPU."""
    if name in WHOLE_GPU_RESOURCES:
        return 1.0
    m = _MIG.match(name)
    if m is None:
        raise ValueError(f"{name!r} is not a GPU resource")
    return int(m.group("g")) / MIG_SLICES_PER_GPU


def mig_profile_gpus(profile: str) -> float:
    """Whole GPUs in a MIG instance of `profile` as DCGM names it (`GPU_I_PROFILE`, e.g.
    1g.10gb → 1/7); 1.0 for '' (a whole GPU) or a profile it cannot read."""
    m = re.match(r"([1-7])g\.", profile)
    return int(m.group(1)) / MIG_SLICES_PER_GPU if m else 1.0


def gpu_counts(resources: Mapping[str, Any], parse: Callable[[Any], Any]) -> tuple[tuple[str, float], ...]:
    """The GPU resources in a requests/limits/capacity mapping, as sorted (name, count) pairs;
    `parse` turns a quantity into a number (raises ValueError if malformed)."""
    out = []
    for name, q in resources.items():
        if isinstance(name, str) and q is not None and is_gpu_resource(name):
            n = float(parse(q))
            if n < 0:
                raise ValueError(f"{name}: negative quantity {q!r}")
            if n > 0:
                out.append((name, n))
    return tuple(sorted(out))


def total_gpus(counts: Iterable[tuple[str, float]]) -> float:
    """Whole GPUs in (resource, count) pairs."""
    return sum(n * gpu_equivalents(name) for name, n in counts)


__all__ = ["MIG_SLICES_PER_GPU", "WHOLE_GPU_RESOURCES", "gpu_counts", "gpu_equivalents",
           "is_gpu_resource", "mig_profile_gpus", "total_gpus"]

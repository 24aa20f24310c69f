"""Settings for Kubernetes reads. Passed in by the caller; nothing here reads the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_POOL_LABELS = (
    "karpenter.sh/nodepool",
    "eks.amazonaws.com/nodegroup",
    "cloud.google.com/gke-nodepool",
    "kubernetes.azure.com/agentpool",
    "node-pool",
    "opsagent.dev/node-pool",
)


class K8sReadSettings(BaseModel):
    """The read-only identity and how much one call may bring back."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kubeconfig: Path = Field(description="Kubeconfig of the read-only identity (get/list/watch only).")
    context: str | None = Field(default=None, description="Kubeconfig context; default its current context.")
    timeout_s: float = Field(default=10.0, gt=0, le=120, description="Per-request timeout in seconds.")
    page_size: int = Field(default=250, ge=10, le=1000, description="Items per list page.")
    max_list_items: int = Field(default=2000, ge=10, le=50_000,
                                description="Items read per list before stopping (the answer then says so).")
    serving_namespaces: tuple[str, ...] = Field(default=(),
                                                description="Where to look for workloads when no namespace is "
                                                            "given; empty means every namespace.")
    gpu_resources: tuple[str, ...] = Field(default=("nvidia.com/gpu", "amd.com/gpu"),
                                           description="Extended resources counted as GPUs (MIG slices "
                                                       "nvidia.com/mig-* are counted too).")
    pool_labels: tuple[str, ...] = Field(default=DEFAULT_POOL_LABELS,
                                         description="Node labels naming a node pool, first found wins.")
    max_text_chars: int = Field(default=300, ge=40, le=4000, description="Longest message or annotation kept.")

"""Who serves what, where, with how much traffic: the fleet file joined with a cluster snapshot.

A pod belongs to the fleet workload with its namespace and `app.kubernetes.io/name` label; its
`model` and `model-version` labels pick the performance model. GPUs are handed out per node, in
pod-name order, as the device plugin would have allocated them. A workload's traffic is its own curve,
moved between the backends of a route whose live weights differ from the fleet's declared ones
(`route_shift`), and split evenly over its Ready pods that are not on a node whose GPUs fell off the
bus. Pure: no I/O, no clock; `evaluate(t)` gives every replica's and every GPU's signals at `t`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from deploy.sandbox.fleet import (
    GPU_MEMORY_LABEL,
    GPU_PRODUCT_LABEL,
    LABEL_APP,
    LABEL_MODEL,
    LABEL_MODEL_VERSION,
    Fleet,
    ModelVersion,
    Route,
    Workload,
    _label_value,
)
from deploy.sandbox.simulator import model
from deploy.sandbox.simulator.cluster import ClusterSnapshot, Node, Pod

log = logging.getLogger(__name__)

# PCI bus ids of the GPUs of an 8-GPU HGX board (p5 / p4d), reused for smaller nodes.
_PCI_BUSES = ("53", "64", "75", "86", "97", "A8", "B9", "CA")
UNKNOWN_GPU_SPEED = 0.5
CRASH_FREE_MIB = 1085  # what a CUDA OOM at start-up leaves: ~1.06 GiB free


@dataclass(frozen=True)
class PodRole:
    """A pod the simulator cares about: a fleet replica, or any pod holding GPUs."""

    pod: Pod
    workload: Workload | None
    version: ModelVersion | None
    node: Node | None
    product: str
    speed: float
    gpu_indices: tuple[int, ...]
    serving: bool  # Ready fleet replica with a known version: exports serving metrics
    eligible: bool  # receives traffic (serving, and its node's GPUs are healthy)

    @property
    def runtime(self) -> Literal["vllm", "triton", ""]:
        rt = self.workload.runtime if self.workload else ""
        return "vllm" if rt == "vllm" else "triton" if rt == "triton" else ""

    @property
    def crashing(self) -> bool:
        return bool(self.version and self.version.crash)

    @property
    def key(self) -> tuple[str, str]:
        return self.pod.namespace, self.pod.name


@dataclass(frozen=True)
class GpuSlot:
    """One physical GPU of a node, and the pod it is allocated to (if any)."""

    node: Node
    index: int
    uuid: str
    pci_bus_id: str
    product: str
    spec: model.GpuSpec
    holder: PodRole | None
    xid: int
    temp_offset_c: float
    heat_c: float = 0.0

    @property
    def model_name(self) -> str:
        """The product as DCGM's `modelName` shows it: `NVIDIA H100 80GB HBM3`."""
        return self.product.replace("-", " ")


@dataclass(frozen=True)
class FleetSignals:
    """Everything at one instant: each serving replica's signals and each GPU's readings."""

    t: float
    rps: dict[tuple[str, str], float]  # (namespace, pod) → offered requests/s
    replicas: dict[tuple[str, str], model.VllmSignals | model.TritonSignals]
    gpus: tuple[model.GpuSignals, ...]  # aligned with Placement.gpus


def gpu_uuid(node: str, index: int) -> str:
    """A stable fake GPU UUID in NVIDIA's format, derived from the node name and GPU index."""
    h = hashlib.sha256(f"{node}/gpu/{index}".encode()).hexdigest()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


class Placement:
    """The fleet as the cluster runs it right now."""

    def __init__(self, fleet: Fleet, snapshot: ClusterSnapshot, demand_offset_s: float = 0.0) -> None:
        self.fleet = fleet
        self.snapshot = snapshot
        self.demand_offset_s = demand_offset_s  # the simulation clock's lead over real time, seconds
        workloads = {(w.namespace, w.name): w for w in fleet.workloads}
        versions = {(m.model, _label_value(m.version)): m for m in fleet.model_versions}
        nodes = {n.name: n for n in snapshot.nodes}
        xid = snapshot.faults.xid

        gpu_map: dict[tuple[str, str], tuple[int, ...]] = {}
        for node in snapshot.nodes:
            free = list(range(node.gpu_capacity))
            holders = sorted(
                (
                    p
                    for p in snapshot.pods
                    if p.node_name == node.name
                    and p.gpu_request > 0
                    and (p.ready or p.phase == "Running")
                ),
                key=lambda p: (p.name, p.namespace),
            )
            for p in holders:
                take, free = free[: p.gpu_request], free[p.gpu_request :]
                gpu_map[(p.namespace, p.name)] = tuple(take)

        roles: list[PodRole] = []
        for p in snapshot.pods:
            w = workloads.get((p.namespace, p.labels.get(LABEL_APP, "")))
            gpus = gpu_map.get((p.namespace, p.name), ())
            if w is None and not gpus:
                continue
            mv = versions.get(
                (p.labels.get(LABEL_MODEL, ""), p.labels.get(LABEL_MODEL_VERSION, ""))
            )
            if w is not None and mv is None:
                log.warning(
                    "pod %s/%s: no model version %s %s in the fleet; it gets no traffic",
                    p.namespace,
                    p.name,
                    p.labels.get(LABEL_MODEL),
                    p.labels.get(LABEL_MODEL_VERSION),
                )
            on = nodes.get(p.node_name)
            product = on.labels.get(GPU_PRODUCT_LABEL, "") if on else ""
            serving = bool(w and mv and p.ready and on and not mv.crash)
            roles.append(
                PodRole(
                    pod=p,
                    workload=w,
                    version=mv,
                    node=on,
                    product=product,
                    # A MIG slice is its compute sevenths of the GPU (memory bandwidth splits the same way).
                    speed=fleet.gpu_speed.get(product, UNKNOWN_GPU_SPEED) * (p.mig_share or 1.0),
                    gpu_indices=gpus,
                    serving=serving,
                    eligible=serving and p.node_name not in xid,
                )
            )
        self.roles: tuple[PodRole, ...] = tuple(roles)
        self.serving: tuple[PodRole, ...] = tuple(r for r in roles if r.serving)
        holder_of = {(r.pod.node_name, i): r for r in roles for i in r.gpu_indices}

        slots: list[GpuSlot] = []
        for node in snapshot.nodes:
            product = node.labels.get(GPU_PRODUCT_LABEL, "")
            if not node.gpu_capacity or not product:
                continue
            mem = node.labels.get(GPU_MEMORY_LABEL, "")
            spec = model.gpu_spec(product, int(mem) if mem.isdigit() else None)
            for i in range(node.gpu_capacity):
                uuid = gpu_uuid(node.name, i)
                slots.append(
                    GpuSlot(
                        node=node,
                        index=i,
                        uuid=uuid,
                        pci_bus_id=f"00000000:{_PCI_BUSES[i % len(_PCI_BUSES)]}:00.0",
                        product=product,
                        spec=spec,
                        holder=holder_of.get((node.name, i)),
                        xid=xid.get(node.name, 0),
                        heat_c=snapshot.faults.heat.get(node.name, 0.0),
                        temp_offset_c=round(4.0 * model.stable_unit(uuid, "temp") - 2.0, 1),
                    )
                )
        self.gpus: tuple[GpuSlot, ...] = tuple(slots)

        self.eligible: dict[tuple[str, str], tuple[PodRole, ...]] = {}
        for w in fleet.workloads:
            self.eligible[(w.namespace, w.name)] = tuple(
                r
                for r in self.serving
                if r.eligible
                and r.workload is not None
                and r.workload.name == w.name
                and r.pod.namespace == w.namespace
            )

    # ---- queries ------------------------------------------------------------------------------
    def ready_workloads(self) -> set[tuple[str, str]]:
        """(namespace, name) of fleet workloads with at least one Ready, serving pod."""
        return {(r.pod.namespace, r.workload.name) for r in self.serving if r.workload}

    def workload_demand(self, w: Workload, t: float) -> float:
        """Requests/s arriving for `w` at `t`, with the traffic fault multiplier applied."""
        mult = self.snapshot.faults.traffic_at(f"{w.namespace}/{w.name}", t)
        # The simulation clock (exporter.LiveFleet.set_clock) moves only the demand model's hour of day:
        # samples keep their real timestamps.
        t_demand = t + self.demand_offset_s
        return model.demand_rps(w.traffic, t_demand, seed=f"{w.namespace}/{w.name}") * mult

    def demands(self, t: float) -> dict[tuple[str, str], float]:
        """Requests/s arriving for every fleet workload at `t`: its own demand, moved by the routes' live weights."""
        out = {(w.namespace, w.name): self.workload_demand(w, t) for w in self.fleet.workloads}
        for route in self.fleet.routes:
            live = self.snapshot.routes.get(f"{route.namespace}/{route.name}")
            if live is not None:
                out |= route_shift(route, live, out)
        return out

    def pod_rps(self, t: float) -> dict[tuple[str, str], float]:
        rps = {r.key: 0.0 for r in self.serving}
        demand = self.demands(t)
        for w in self.fleet.workloads:
            pods = self.eligible[(w.namespace, w.name)]
            if not pods:
                continue
            share = demand[(w.namespace, w.name)] / len(pods)
            for r in pods:
                rps[r.key] = share
        return rps

    def evaluate(self, t: float) -> FleetSignals:
        """Every serving replica's and every GPU's signals at epoch second `t`."""
        rps = self.pod_rps(t)
        replicas: dict[tuple[str, str], model.VllmSignals | model.TritonSignals] = {}
        # Replicas of a workload usually share version, GPU and traffic: model them once.
        same: dict[tuple[int, str, float, float], model.VllmSignals | model.TritonSignals] = {}
        hung = self.snapshot.faults.hung
        for r in self.serving:
            assert r.version is not None
            since = hung.get(f"{r.pod.namespace}/{r.pod.name}")
            if since is not None and r.runtime != "triton":
                replicas[r.key] = model.stalled_vllm_signals(r.version, rps[r.key], t - since)
                continue
            key = (id(r.version), r.runtime, r.speed, rps[r.key])
            sig = same.get(key)
            if sig is None:
                if r.runtime == "triton":
                    sig = model.triton_signals(r.version, r.speed, rps[r.key])
                else:
                    sig = model.vllm_signals(r.version, r.speed, rps[r.key])
                same[key] = sig
            replicas[r.key] = sig
        by_holder: dict[tuple[object, ...], model.GpuSignals] = {}
        gpus = []
        for slot in self.gpus:
            hkey = (slot.holder.key if slot.holder else None, slot.spec, slot.xid, slot.heat_c)
            g = by_holder.get(hkey)
            if g is None:
                g = by_holder[hkey] = self._gpu(slot, replicas)
            gpus.append(g)
        return FleetSignals(t=t, rps=rps, replicas=replicas, gpus=tuple(gpus))

    @staticmethod
    def _gpu(
        slot: GpuSlot,
        replicas: dict[tuple[str, str], model.VllmSignals | model.TritonSignals],
    ) -> model.GpuSignals:
        r = slot.holder
        sig = replicas.get(r.key) if r else None
        gr, fb, tensor, dram, loaded = 0.0, 0.0, 0.42, 0.6, False
        if isinstance(sig, model.TritonSignals):
            gr, fb, tensor, dram, loaded = sig.gr_active, sig.fb_used_fraction, 0.55, 0.35, True
        elif isinstance(sig, model.VllmSignals):
            gr, fb, loaded = sig.gr_active, model.VLLM_MEMORY_FRACTION, True
        if sig is not None and r is not None and r.version is not None and r.version.tensor_share is not None:
            tensor = r.version.tensor_share
        elif r is not None and r.crashing:
            # Loading the weights, then CUDA OOM: memory all but full, engines barely busy.
            gr, loaded = 0.01, True
            fb = 1.0 - (CRASH_FREE_MIB + slot.spec.memory_mib * 0.0065) / slot.spec.memory_mib
        return model.gpu_signals(
            slot.spec,
            gr_active=gr,
            fb_used_fraction=fb,
            tensor_share=tensor,
            dram_share=dram,
            loaded=loaded,
            xid=slot.xid,
            heat_c=slot.heat_c,
        )


def route_shift(route: Route, live: Mapping[str, int], demand: dict[tuple[str, str], float],
                ) -> dict[tuple[str, str], float]:
    """The demand of `route`'s backends once its live weights (backend → weight) replace the declared ones.

    The route carries the sum R of its backends' own demand. A backend whose share of the weights is Δ above
    (below) its declared share gains (loses) Δ × R; a backend cannot lose more than it has, a backend whose
    live weight is 0 receives nothing, and the fleet's backends together receive R times their share of the
    live weights (the rest goes to backends the fleet does not serve). At the declared weights nothing moves.
    A backend the live route names but the fleet's route does not is counted if it is a fleet workload of the
    route's namespace (declared share 0); if every live weight is 0, the gateway has nowhere to send the
    route's traffic and its backends receive none of it.
    """
    weights = dict(live)
    declared = route.declared()
    names = [n for n in {**declared, **weights} if (route.namespace, n) in demand]
    d_total, l_total = sum(declared.values()), sum(weights.values())
    if l_total and all(abs(weights.get(n, 0) / l_total - declared.get(n, 0) / d_total) < 1e-9 for n in names):
        return {}
    keys = [(route.namespace, n) for n in names]
    total = sum(demand[k] for k in keys)
    moved = {k: max(0.0, demand[k] + ((weights.get(k[1], 0) / l_total if l_total else 0.0)
                                       - declared.get(k[1], 0) / d_total) * total) if weights.get(k[1], 0) else 0.0
             for k in keys}
    kept = sum(moved.values())
    served = total * sum(weights.get(n, 0) for n in names) / l_total if l_total else 0.0
    if kept > 0:
        moved = {k: v * served / kept for k, v in moved.items()}
    return moved

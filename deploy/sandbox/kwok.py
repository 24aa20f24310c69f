"""KWOK stage configuration: how the fake GPU nodes and the pods on them behave.

KWOK plays the kubelet: nodes turn Ready and keep heartbeating; pods scheduled onto them turn
Running and Ready, and Ready again after the node lifecycle controller marked them NotReady for a
node that missed its heartbeats. A pod running a model version the fleet marks as crashing (`crash:` in
fleet.yaml, e.g. a context length that does not fit in GPU memory) crash-loops instead: waiting in
CrashLoopBackOff with its last termination `Error` (exit 1) and a restart count that keeps rising,
as a CUDA out-of-memory at start-up looks on a real node. The stage matches the pod's
`model-version` label, so nothing in the pod tells the agent that it was scripted.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from deploy.sandbox.fleet import LABEL_MODEL_VERSION, Fleet, _label_value

_NODE_INIT = """\
{{ $now := Now }}
conditions:
{{ range NodeConditions }}
- lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ $now | Quote }}
  message: {{ .message | Quote }}
  reason: {{ .reason | Quote }}
  status: {{ .status | Quote }}
  type: {{ .type | Quote }}
{{ end }}
addresses:
- address: {{ NodeIP | Quote }}
  type: InternalIP
- address: {{ .metadata.name | Quote }}
  type: Hostname
daemonEndpoints:
  kubeletEndpoint:
    Port: 10250
nodeInfo:
  architecture: amd64
  containerRuntimeVersion: "containerd://1.7.27"
  kubeProxyVersion: ""
  kubeletVersion: "v1.34.4"
  operatingSystem: linux
  osImage: "Amazon Linux 2023 (NVIDIA driver 570.172.08)"
  kernelVersion: "6.1.141-155.222.amzn2023.x86_64"
  machineID: ""
  systemUUID: ""
  bootID: ""
phase: Running
"""

_NODE_HEARTBEAT = """\
{{ $now := Now }}
conditions:
{{ range NodeConditions }}
- lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ StartTime | Quote }}
  message: {{ .message | Quote }}
  reason: {{ .reason | Quote }}
  status: {{ .status | Quote }}
  type: {{ .type | Quote }}
{{ end }}
"""

_POD_ADDRESSES = """\
hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}
phase: Running
startTime: {{ $now | Quote }}
"""

def _pod_running(ready: bool) -> str:
    """A running pod's status: every container started; Ready (or not yet, with the reason) as `ready` says."""
    cond = ('status: "True", type: {t}' if ready else 'status: "False", type: {t}, reason: ContainersNotReady')
    return f"""\
{{{{ $now := Now }}}}
conditions:
- {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "True", type: Initialized}}
- {{lastTransitionTime: {{{{ $now | Quote }}}}, {cond.format(t="Ready")}}}
- {{lastTransitionTime: {{{{ $now | Quote }}}}, {cond.format(t="ContainersReady")}}}
- {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "True", type: PodScheduled}}
containerStatuses:
{{{{ range .spec.containers }}}}
- image: {{{{ .image | Quote }}}}
  imageID: {{{{ printf "%s@sha256:%s" .image (sha256sum .image) | Quote }}}}
  name: {{{{ .name | Quote }}}}
  ready: {"true" if ready else "false"}
  started: true
  restartCount: 0
  state:
    running:
      startedAt: {{{{ $now | Quote }}}}
{{{{ end }}}}
""" + _POD_ADDRESSES


_POD_READY = _pod_running(ready=True)

# First failure and every later one: the restart count rises by one each time the stage repeats.
_POD_CRASH = """\
{{ $now := Now }}
{{ $restarts := 0 }}
{{ range (or .status.containerStatuses list) }}{{ $restarts = .restartCount }}{{ end }}
conditions:
- {lastTransitionTime: {{ $now | Quote }}, status: "True", type: Initialized}
- {lastTransitionTime: {{ $now | Quote }}, status: "False", type: Ready, reason: ContainersNotReady}
- {lastTransitionTime: {{ $now | Quote }}, status: "False", type: ContainersReady, reason: ContainersNotReady}
- {lastTransitionTime: {{ $now | Quote }}, status: "True", type: PodScheduled}
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  imageID: {{ printf "%s@sha256:%s" .image (sha256sum .image) | Quote }}
  name: {{ .name | Quote }}
  ready: false
  started: false
  restartCount: {{ add1 $restarts }}
  lastState:
    terminated:
      exitCode: __EXIT__
      reason: __REASON__
      startedAt: {{ $now | Quote }}
      finishedAt: {{ $now | Quote }}
  state:
    waiting:
      reason: CrashLoopBackOff
      message: {{ printf "back-off 10s restarting failed container=%s" .name | Quote }}
{{ end }}
""" + _POD_ADDRESSES


# An image that cannot be pulled: the pod stays Pending with its container waiting; the kubelet's
# back-off message carries the registry's answer.
_POD_IMAGE_PULL = """\
{{ $now := Now }}
conditions:
- {lastTransitionTime: {{ $now | Quote }}, status: "True", type: Initialized}
- {lastTransitionTime: {{ $now | Quote }}, status: "False", type: Ready, reason: ContainersNotReady}
- {lastTransitionTime: {{ $now | Quote }}, status: "False", type: ContainersReady, reason: ContainersNotReady}
- {lastTransitionTime: {{ $now | Quote }}, status: "True", type: PodScheduled}
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  imageID: ""
  name: {{ .name | Quote }}
  ready: false
  started: false
  restartCount: 0
  state:
    waiting:
      reason: ImagePullBackOff
      message: {{ printf "Back-off pulling image %s" .image | Quote }}
{{ end }}
hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
phase: Pending
startTime: {{ $now | Quote }}
"""


# A server that is still downloading or loading its weights: the container runs, the readiness probe
# fails, the pod holds its GPUs and serves nothing. A later stage makes it Ready after the version's
# `startup_s`; a rollout whose deadline is shorter reports ProgressDeadlineExceeded first.
_POD_STARTING = _pod_running(ready=False)


def _stage(name: str, kind: str, selector: dict[str, object], template: str, *,
           delay_ms: int = 0, jitter_ms: int = 0, delete: bool = False) -> dict[str, object]:
    spec: dict[str, object] = {
        "resourceRef": {"apiGroup": "v1", "kind": kind},
        "selector": selector,
        "next": {"delete": True} if delete else {"statusTemplate": template},
    }
    if delay_ms:
        spec["delay"] = {"durationMilliseconds": delay_ms, "jitterDurationMilliseconds": jitter_ms or delay_ms}
    return {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": name}, "spec": spec}


def stages(fleet: Fleet) -> list[dict[str, object]]:
    crashing = sorted({_label_value(m.version) for m in fleet.model_versions if m.crash}) or ["-"]
    # One crash stage per way of dying, so each pod shows its own version's termination reason and code.
    deaths: dict[tuple[str, int], list[str]] = {}
    for m in fleet.model_versions:
        if m.crash:
            deaths.setdefault((m.crash_reason, m.exit_code), []).append(_label_value(m.version))
    unpullable = sorted({_label_value(m.version) for m in fleet.model_versions if m.image_pull_error}) or ["-"]
    not_placed = {"key": ".status.hostIP", "operator": "DoesNotExist"}
    slow: dict[float, list[str]] = {}
    for m in fleet.model_versions:
        if m.startup_s > 0 and not m.crash and not m.image_pull_error:
            slow.setdefault(m.startup_s, []).append(_label_value(m.version))
    starting = sorted({v for vs in slow.values() for v in vs}) or ["-"]
    started = {"key": ".status.podIP", "operator": "Exists"}
    not_ready = {"key": ".status.conditions.[] | select( .type == \"Ready\" ) | .status", "operator": "NotIn",
                 "values": ["True"]}
    version_key = f'.metadata.labels["{LABEL_MODEL_VERSION}"]'
    alive = {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"}
    not_started = {"key": ".status.podIP", "operator": "DoesNotExist"}
    return [
        _stage("node-initialize", "Node", {"matchExpressions": [
            {"key": ".status.conditions.[] | select( .type == \"Ready\" ) | .status", "operator": "NotIn",
             "values": ["True"]}]}, _NODE_INIT),
        _stage("node-heartbeat", "Node", {"matchExpressions": [
            {"key": ".status.phase", "operator": "In", "values": ["Running"]},
            {"key": ".status.conditions.[] | select( .type == \"Ready\" ) | .status", "operator": "In",
             "values": ["True"]}]}, _NODE_HEARTBEAT, delay_ms=15000, jitter_ms=16000),
        _stage("pod-ready", "Pod", {"matchExpressions": [
            alive, not_started, {"key": version_key, "operator": "NotIn", "values": crashing + unpullable + starting}]},
            _POD_READY, delay_ms=1000, jitter_ms=3000),
        _stage("pod-starting", "Pod", {"matchExpressions": [
            alive, not_started, {"key": version_key, "operator": "In", "values": starting}]},
            _POD_STARTING, delay_ms=1000, jitter_ms=3000),
        *(_stage(f"pod-ready-after-{int(secs)}s", "Pod", {"matchExpressions": [
            alive, started, not_ready, {"key": version_key, "operator": "In", "values": sorted(versions)}]},
            _POD_READY, delay_ms=int(secs * 1000), jitter_ms=int(secs * 1000) + 1000)
          for secs, versions in sorted(slow.items())),
        # The node lifecycle controller marks every pod of a node that missed its heartbeats NotReady; once the
        # node reports again, the kubelet's probes pass and it reports the pod Ready again (the versions that
        # crash, cannot pull or are still loading keep their own stages).
        _stage("pod-ready-again", "Pod", {"matchExpressions": [
            alive, started, not_ready,
            {"key": version_key, "operator": "NotIn", "values": crashing + unpullable + starting}]},
            _POD_READY, delay_ms=2000, jitter_ms=3000),
        _stage("pod-image-pull", "Pod", {"matchExpressions": [
            alive, not_placed, {"key": version_key, "operator": "In", "values": unpullable}]},
            _POD_IMAGE_PULL, delay_ms=2000, jitter_ms=3000),
        *(_stage("pod-crash" if (reason, code) == ("Error", 1) else f"pod-crash-{reason.lower()}-{code}", "Pod",
                 {"matchExpressions": [alive, {"key": version_key, "operator": "In", "values": sorted(versions)}]},
                 _POD_CRASH.replace("__EXIT__", str(code)).replace("__REASON__", reason),
                 delay_ms=4000, jitter_ms=8000)
          for (reason, code), versions in sorted(deaths.items())),
        _stage("pod-delete", "Pod", {"matchExpressions": [
            {"key": ".metadata.deletionTimestamp", "operator": "Exists"}]}, "", delete=True),
    ]


def write_config(path: Path, fleet: Fleet) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(stages(fleet), sort_keys=False))
    return path

"""The chart's RBAC is what the code calls: every Kubernetes API call the executor's code makes (found in the
source, not listed by hand) is granted to the executor's ServiceAccount, and nothing else is; the reader's
calls are granted to the reader, which writes nothing. The sandbox grants its executor the same rules, so the
integration tests run with the privileges a real install has.

The calls are found by reading the source: `<client>.apps.read_namespaced_deployment(...)` is
`get deployments.apps` in a namespace; `core.list_pod_for_all_namespaces` is `list pods` cluster-wide;
`core.create_namespaced_pod_eviction` is `create pods/eviction`.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.sandbox import cluster, components

ROOT = Path(__file__).parents[2]
CHART = ROOT / "deploy" / "helm" / "opsagent"
EXECUTOR_CODE = [ROOT / "tools" / "k8s_write", ROOT / "agent" / "change" / "executor"]
READER_CODE = [ROOT / "tools" / "k8s_read", ROOT / "agent" / "change" / "verify.py",
               ROOT / "agent" / "change" / "rollout_watch.py", ROOT / "agent" / "change" / "deploy.py"]

GROUPS = {"core": "", "apps": "apps", "autoscaling": "autoscaling", "batch": "batch", "policy": "policy",
          "events": "events.k8s.io"}
VERBS = {"read": "get", "list": "list", "patch": "patch", "create": "create", "replace": "update",
         "delete": "delete", "watch": "watch"}
CLUSTER_SCOPED = {"nodes", "namespaces", "persistentvolumes", "priorityclasses"}
SUBRESOURCES = {"pod_eviction": "pods/eviction", "pod_log": "pods/log", "deployment_scale": "deployments/scale",
                "node_status": "nodes/status"}
CUSTOM = re.compile(r"^(get|list|patch|create|replace|delete)_(namespaced_|cluster_)?custom_object(_status)?$")
METHOD = re.compile(r"^(read|list|patch|create|replace|delete|watch)_(namespaced_)?([a-z_]+?)(_for_all_namespaces)?$")

Perm = tuple[str, str, str, str]  # (api group, resource, verb, "namespaced" | "cluster")


def _resource(snake: str) -> str:
    if snake in SUBRESOURCES:
        return SUBRESOURCES[snake]
    return snake.replace("_", "") + "s"


def calls(paths: list[Path]) -> dict[Perm, list[str]]:
    """Every `<x>.<api>.<method>` reference in the source under `paths`, as the permission it needs."""
    found: dict[Perm, list[str]] = {}
    files = [f for p in paths for f in (sorted(p.rglob("*.py")) if p.is_dir() else [p])]
    for f in files:
        tree = ast.parse(f.read_text(), str(f))
        for where, perm in _custom_calls(tree, f):
            found.setdefault(perm, []).append(where)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                    and node.value.attr in GROUPS):
                continue
            m = METHOD.match(node.attr)
            if m is None:  # `self.policy.limits` is no API call; `apps.get_api_resources` would be one to map
                assert not re.match(r"^(get|connect|proxy)_", node.attr), \
                    f"{f.name}:{node.lineno}: {node.value.attr}.{node.attr} is an API call this test cannot map"
                continue
            verb, namespaced, snake, all_ns = m.groups()
            res = _resource(snake)
            scope = "cluster" if all_ns or res.split("/")[0] in CLUSTER_SCOPED or not namespaced else "namespaced"
            found.setdefault((GROUPS[node.value.attr], res, VERBS[verb], scope), []).append(
                f"{f.name}:{node.lineno} {node.attr}")
    return found


def _crd_constants() -> dict[str, tuple[str, str]]:
    """Module-level `NAME = ("group.io", "v1alpha1", "plural")` constants anywhere in agent/ and tools/: how the
    code names the custom resources it calls (`group, version, plural = ROLLOUTS`)."""
    out: dict[str, tuple[str, str]] = {}
    for f in [*sorted((ROOT / "agent").rglob("*.py")), *sorted((ROOT / "tools").rglob("*.py"))]:
        for node in ast.parse(f.read_text(), str(f)).body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                    and isinstance(node.value, ast.Tuple) and len(node.value.elts) == 3
                    and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.value.elts)):
                group, _, plural = (e.value for e in node.value.elts)  # type: ignore[attr-defined]
                if "." in group:
                    out[node.targets[0].id] = (group, plural)
    return out


def _module_strings(tree: ast.Module) -> dict[str, str]:
    """Module-level string constants, also unpacked ones (`GROUP, VERSION = "argoproj.io", "v1alpha1"`)."""
    out: dict[str, str] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target, value = node.targets[0], node.value
        pairs = (zip(target.elts, value.elts, strict=False) if isinstance(target, ast.Tuple)
                 and isinstance(value, ast.Tuple) else [(target, value)])
        for t, v in pairs:
            if isinstance(t, ast.Name) and isinstance(v, ast.Constant) and isinstance(v.value, str):
                out[t.id] = v.value
    return out


def _custom_calls(tree: ast.Module, f: Path) -> list[tuple[str, Perm]]:
    """`custom.<verb>_namespaced_custom_object[_status](group, version, ns, plural, …)` calls, as permissions.
    The group and plural are strings at the call, module constants, or a CRD constant the function unpacks
    (`group, version, plural = ROLLOUTS`)."""
    crds, strings = _crd_constants(), _module_strings(tree)
    out: list[tuple[str, Perm]] = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        unpacked = [crds[n.id] for n in ast.walk(fn) if isinstance(n, ast.Name) and n.id in crds]
        for call in ast.walk(fn):
            if not isinstance(call, ast.Call):
                continue
            ref = next((a for a in [call.func, *call.args] if isinstance(a, ast.Attribute) and CUSTOM.match(a.attr)),
                       None)
            if ref is None:
                continue
            verb, scope, status = CUSTOM.match(ref.attr).groups()  # type: ignore[union-attr]
            args = call.args if ref is call.func else call.args[call.args.index(ref) + 1:]  # or a wrapper's argument
            at = 3 if scope != "cluster_" else 2

            def value(i: int, args: list[ast.expr] = args) -> str | None:
                if i >= len(args):
                    return None
                a = args[i]
                if isinstance(a, ast.Constant) and isinstance(a.value, str):
                    return a.value
                return strings.get(a.id) if isinstance(a, ast.Name) else None

            group, plural = value(0), value(at)
            if (group is None or plural is None) and len(unpacked) == 1:
                group, plural = group or unpacked[0][0], plural or unpacked[0][1]
            assert group and plural, f"{f.name}:{ref.lineno}: {ref.attr} names a custom resource this test cannot map"
            out.append((f"{f.name}:{ref.lineno} {ref.attr}",
                        (group, f"{plural}/status" if status else plural, VERBS["read" if verb == "get" else verb],
                         "cluster" if scope == "cluster_" else "namespaced")))
    return out


def grants(rules: list[dict[str, Any]], scope: str) -> set[Perm]:
    return {(g, r, v, scope) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


@pytest.fixture(scope="module")
def chart() -> dict[tuple[str, str], dict[str, Any]]:
    helm = components.locate(components.default_cache_dir()).helm
    if not helm.exists():
        pytest.fail(f"helm is not built at {helm}: run deploy/sandbox/build-components.sh")
    out = subprocess.run([str(helm), "template", "t", str(CHART), "--kube-version", "1.34.0", "--set",
                          "rbac.executor.namespaces={llm-prod}", "--set", "auditCheckpoints.allowRewritable=true"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout) if d}


def executor_grants(chart: dict[tuple[str, str], dict[str, Any]]) -> set[Perm]:
    role = chart[("Role", "t-opsagent-executor")]
    assert role["metadata"]["namespace"] == "llm-prod"
    return grants(role["rules"], "namespaced") | grants(chart[("ClusterRole", "t-opsagent-executor-nodes")]["rules"],
                                                        "cluster")


def _covered(perm: Perm, granted: set[Perm]) -> bool:
    g, r, v, scope = perm
    # a namespaced call is also allowed by the same rule in a ClusterRole
    return perm in granted or (scope == "namespaced" and (g, r, v, "cluster") in granted)


def test_the_executor_is_granted_exactly_the_calls_its_code_makes(
        chart: dict[tuple[str, str], dict[str, Any]]) -> None:
    used = calls(EXECUTOR_CODE)
    assert used, "the scan found no API calls: the test would pass vacuously"
    granted = executor_grants(chart)
    missing = {p: where for p, where in used.items() if not _covered(p, granted)}
    assert not missing, f"the executor's code makes calls its ServiceAccount may not: {missing}"
    unused = {p for p in granted if p not in used and not (p[3] == "cluster" and (*p[:3], "namespaced") in used)}
    assert not unused, f"the chart grants the executor more than its code calls: {sorted(unused)}"
    # The one delete is a pod restart's, in the serving namespaces (its Role), never cluster-wide: anything else
    # deleted or replaced whole would be a write the code does not make.
    deletes = {p for p in granted if p[2] == "delete"}
    assert deletes == {("", "pods", "delete", "namespaced")}
    assert not {p for p in granted if p[2] in ("update", "deletecollection", "watch", "*")}


def test_the_sandbox_grants_its_executor_the_charts_rules(chart: dict[tuple[str, str], dict[str, Any]]) -> None:
    sandbox = grants(cluster.EXECUTOR_RULES, "namespaced") | grants(cluster.EXECUTOR_NODE_RULES, "cluster")
    assert sandbox == executor_grants(chart)


def test_the_reader_is_granted_every_call_its_code_makes_and_no_write_or_log(
        chart: dict[tuple[str, str], dict[str, Any]]) -> None:
    used = calls(READER_CODE)
    assert used
    granted = grants(chart[("ClusterRole", "t-opsagent-reader")]["rules"], "cluster")
    missing = {p: where for p, where in used.items() if not _covered(p, granted)}
    assert not missing, f"the reader's code makes calls its ServiceAccount may not: {missing}"
    assert {p[2] for p in granted} <= {"get", "list", "watch"}
    assert not {p for p in granted if p[1] in ("pods/log", "secrets", "configmaps")}
    sandbox = grants(cluster.READER_RULES, "cluster")
    assert sandbox == granted, "the sandbox's reader has the chart's rules"


def test_the_scan_sees_a_call_added_to_the_executor(tmp_path: Path) -> None:
    """A new call in the executor's code shows up as a permission (so the chart test above would fail)."""
    extra = tmp_path / "extra.py"
    extra.write_text("def f(c):\n    return c.apps.replace_namespaced_deployment('a', 'b', {})\n")
    assert ("apps", "deployments", "update", "namespaced") in calls([*EXECUTOR_CODE, extra])
    assert ("apps", "deployments", "update", "namespaced") not in calls(EXECUTOR_CODE)


def test_the_executor_may_change_only_unschedulable_on_nodes_in_the_chart_and_the_sandbox(
        chart: dict[tuple[str, str], dict[str, Any]]) -> None:
    vap = chart[("ValidatingAdmissionPolicy", "t-opsagent-executor-node-patches")]
    assert vap["spec"]["matchConditions"][0]["expression"] == \
        'request.userInfo.username == "system:serviceaccount:default:t-opsagent-executor"'
    assert chart[("ValidatingAdmissionPolicyBinding", "t-opsagent-executor-node-patches")]["spec"] == {
        "policyName": "t-opsagent-executor-node-patches", "validationActions": ["Deny"]}
    sandbox, _ = cluster.node_patch_policy("x", "opsagent-executor")
    assert vap["spec"]["validations"] == sandbox["spec"]["validations"]
    assert vap["spec"]["matchConstraints"] == sandbox["spec"]["matchConstraints"]
    guarded = {v["message"].rsplit(" ", 1)[1] for v in vap["spec"]["validations"]}
    assert {"metadata.labels", "spec.taints", "metadata.annotations"} <= guarded


def test_doctor_checks_the_executor_for_exactly_what_its_code_calls() -> None:
    """`opsagent doctor` asks the cluster (SelfSubjectAccessReview) whether the executor may do what it must:
    the same list, so a grant the code needs is never missed and doctor never demands an unused one."""
    from agent.health import EXECUTOR_MUST, EXECUTOR_MUST_NOT

    used = {(g, r, v) for g, r, v, _ in calls(EXECUTOR_CODE)}
    must = {(g, f"{r}/{sub}" if sub else r, v) for v, g, r, sub, _ in EXECUTOR_MUST}
    assert must == used
    assert not set(EXECUTOR_MUST) & set(EXECUTOR_MUST_NOT)

"""GitOps awareness: objects owned by Argo CD or Flux get a manifest patch, never a direct write."""

from __future__ import annotations

import pytest

from agent.change.gitops import gitops_owner, manifest_patch


@pytest.mark.parametrize(("labels", "annotations", "tool", "source", "certain"), [
    ({}, {"argocd.argoproj.io/tracking-id": "chat:apps/Deployment:llm-prod/chat-primary"}, "argocd", "chat", True),
    ({"kustomize.toolkit.fluxcd.io/name": "serving", "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}, {},
     "flux", "flux-system/serving", True),
    ({"helm.toolkit.fluxcd.io/name": "chat", "helm.toolkit.fluxcd.io/namespace": "llm-prod"}, {},
     "flux", "llm-prod/chat", True),
    ({"app.kubernetes.io/instance": "chat"}, {}, "argocd", "chat", False),  # label tracking
])
def test_owners_are_recognised(labels: dict[str, str], annotations: dict[str, str], tool: str, source: str,
                               certain: bool) -> None:
    owner = gitops_owner(labels, annotations)
    assert owner is not None and (owner.tool, owner.source, owner.certain) == (tool, source, certain)


@pytest.mark.parametrize(("labels", "annotations"), [
    ({}, {}),
    (None, None),
    ({"app.kubernetes.io/instance": "chat", "app.kubernetes.io/managed-by": "Helm"}, {}),  # plain Helm release
    ({"app.kubernetes.io/name": "chat", "team": "assistant"}, {"deployment.kubernetes.io/revision": "3"}),
])
def test_unowned_objects_are_changed_directly(labels: dict[str, str] | None,
                                              annotations: dict[str, str] | None) -> None:
    assert gitops_owner(labels, annotations) is None


def test_the_patch_is_a_diff_of_the_manifest_without_server_fields() -> None:
    before = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "chat", "namespace": "llm-prod", "uid": "u-1", "resourceVersion": "42",
                     "annotations": {"argocd.argoproj.io/tracking-id": "chat:apps/Deployment:llm-prod/chat",
                                     "deployment.kubernetes.io/revision": "7"}},
        "spec": {"template": {"spec": {"containers": [{"name": "server", "image": "vllm/vllm-openai:v0.10.1"}]}}},
        "status": {"replicas": 3},
    }
    after = {**before, "spec": {"template": {"spec": {"containers": [
        {"name": "server", "image": "vllm/vllm-openai:v0.10.2"}]}}}}
    owner = gitops_owner({}, before["metadata"]["annotations"])  # type: ignore[index]
    assert owner is not None
    patch = manifest_patch(owner, before, after)
    assert "-      - image: vllm/vllm-openai:v0.10.1" in patch.diff
    assert "+      - image: vllm/vllm-openai:v0.10.2" in patch.diff
    assert "resourceVersion" not in patch.diff and "status" not in patch.diff and "revision" not in patch.diff
    assert patch.path_hint == "llm-prod/deployment-chat.yaml"
    assert "Argo CD" in patch.explanation and "reverted" in patch.explanation

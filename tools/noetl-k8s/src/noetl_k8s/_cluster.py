"""The objects every workload shares: the Namespace, the Secret, ServiceAccounts and RBAC,
PodDisruptionBudgets."""

from __future__ import annotations

from ._objects import PART_OF, Manifest, meta, selector
from ._spec import CONTROL_API, OUTBOX_PUBLISHER, PROJECTOR, Profile


def build_namespace(profile: Profile) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": profile.namespace,
            "labels": {
                "app.kubernetes.io/part-of": PART_OF,
                "pod-security.kubernetes.io/enforce": "restricted",
            },
        },
    }


def build_secret(profile: Profile) -> Manifest:
    placeholder = profile.name != "kind"
    annotations = {
        "noetl.io/placeholder": "true" if placeholder else "false",
        "noetl.io/note": (
            "Placeholder values: create this Secret out of band (or with the Helm chart) before deploying."
            if placeholder
            else "Dev-only values for the throwaway in-cluster Postgres of the kind overlay."
        ),
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(profile, profile.secret_name, "config", annotations=annotations),
        "type": "Opaque",
        "stringData": dict(profile.secret_values),
    }


def service_account_name(workload: str) -> str:
    return f"noetl-{workload}"


def build_service_account(profile: Profile, workload: str) -> Manifest:
    name = service_account_name(workload)
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": meta(profile, name, workload),
        "automountServiceAccountToken": False,
    }


def workloads(profile: Profile) -> list[str]:
    """Every workload name, which is also its ServiceAccount suffix."""
    return [CONTROL_API, OUTBOX_PUBLISHER, PROJECTOR, *(f"worker-{p.pool}" for p in profile.worker_pools)]


def build_role(profile: Profile) -> Manifest:
    """The one Role of the suite. No process talks to the Kubernetes API, so it grants nothing.

    It exists so that a future need is granted here, narrowly and reviewed, instead of
    through a ClusterRole; the tests refuse wildcards and Secret access in it.
    """
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": meta(profile, "noetl-runtime", "rbac"),
        "rules": [],
    }


def build_role_binding(profile: Profile) -> Manifest:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta(profile, "noetl-runtime", "rbac"),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "noetl-runtime"},
        "subjects": [
            {"kind": "ServiceAccount", "name": service_account_name(w), "namespace": profile.namespace}
            for w in workloads(profile)
        ],
    }


def build_pdb(profile: Profile, name: str, component: str) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(profile, name, component),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(name)}},
    }

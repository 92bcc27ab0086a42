"""Render and check the NoETL Kubernetes manifests, Helm chart values and Grafana dashboard.

``build_manifests(profile)`` is the one source of truth; ``noetl-k8s render`` writes its
output under k8s/, charts/noetl/values.yaml and deploy/grafana/, ``noetl-k8s check``
verifies the checked-in files offline.
"""

from ._build import build_manifests
from ._profiles import PROFILES, base_profile, gke_profile, kind_profile
from ._render import diff_all, dump_documents, load_documents, render_all, render_tree, write_all
from ._spec import (
    ControlApiSpec,
    Images,
    KedaSpec,
    NatsEndpoints,
    NetworkPeer,
    NetworkSpec,
    OidcSpec,
    Profile,
    Resources,
    ServiceSpec,
    WorkerPoolSpec,
    ingress_controller,
)
from ._validate import K8S_VERSION, lint_documents, validate_documents, validate_manifest
from ._workloads import build_worker_deployment, build_worker_scaledobject

__all__ = [
    "K8S_VERSION",
    "PROFILES",
    "ControlApiSpec",
    "Images",
    "KedaSpec",
    "NatsEndpoints",
    "NetworkPeer",
    "NetworkSpec",
    "OidcSpec",
    "Profile",
    "Resources",
    "ServiceSpec",
    "WorkerPoolSpec",
    "base_profile",
    "build_manifests",
    "build_worker_deployment",
    "build_worker_scaledobject",
    "diff_all",
    "dump_documents",
    "gke_profile",
    "ingress_controller",
    "kind_profile",
    "lint_documents",
    "load_documents",
    "render_all",
    "render_tree",
    "validate_documents",
    "validate_manifest",
    "write_all",
]

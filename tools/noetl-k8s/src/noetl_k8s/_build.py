"""The rendered tree of one profile: every manifest, grouped into files in apply order.

Every builder is pure: a spec in, one or more manifests out (plain dicts in the shape
``kubectl apply`` takes). This module only decides which go into which file.
"""

from __future__ import annotations

from ._cluster import (
    build_namespace,
    build_pdb,
    build_role,
    build_role_binding,
    build_secret,
    build_service_account,
    workloads,
)
from ._dev_infra import build_dev_infra
from ._objects import CONTROL_API_NAME, OUTBOX_PUBLISHER_NAME, PROJECTOR_NAME, Manifest
from ._policies import build_dev_infra_policies, build_network_policies
from ._spec import CONTROL_API, OUTBOX_PUBLISHER, PROJECTOR, Profile
from ._workloads import (
    build_control_api_deployment,
    build_control_api_hpa,
    build_control_api_service,
    build_outbox_publisher_deployment,
    build_projector_service,
    build_projector_statefulset,
    build_worker_deployment,
    build_worker_scaledobject,
)


def build_manifests(profile: Profile) -> dict[str, list[Manifest]]:
    """Rendered files of one profile, in apply order, keyed by file name."""
    files: dict[str, list[Manifest]] = {
        "namespace.yaml": [build_namespace(profile)],
        "secrets.yaml": [build_secret(profile)],
        "rbac.yaml": [
            *(build_service_account(profile, w) for w in workloads(profile)),
            build_role(profile),
            build_role_binding(profile),
        ],
    }
    if profile.network.policies:
        # Before the workloads, so that no pod of the suite starts unprotected.
        files["network-policies.yaml"] = build_network_policies(profile)
    if profile.dev_infra:
        files["dev-infra.yaml"] = build_dev_infra(profile)
        if profile.network.policies:
            files["dev-infra.yaml"] += build_dev_infra_policies(profile)

    control_api = [build_control_api_service(profile), build_control_api_deployment(profile)]
    hpa = build_control_api_hpa(profile)
    if hpa is not None:
        control_api.append(hpa)
    if profile.pdbs:
        control_api.append(build_pdb(profile, CONTROL_API_NAME, CONTROL_API))
    files["control-api.yaml"] = control_api

    publisher = [build_outbox_publisher_deployment(profile)]
    projector = [build_projector_service(profile), build_projector_statefulset(profile)]
    if profile.pdbs:
        publisher.append(build_pdb(profile, OUTBOX_PUBLISHER_NAME, OUTBOX_PUBLISHER))
        projector.append(build_pdb(profile, PROJECTOR_NAME, PROJECTOR))
    files["outbox-publisher.yaml"] = publisher
    files["projector.yaml"] = projector

    for pool in profile.worker_pools:
        docs = [build_worker_deployment(profile, pool)]
        if profile.pdbs:
            docs.append(build_pdb(profile, pool.name, f"worker-{pool.pool}"))
        files[f"worker-{pool.pool}.yaml"] = docs
    # Separate file: applying it needs the KEDA CRDs installed.
    files["keda.yaml"] = [build_worker_scaledobject(profile, pool) for pool in profile.worker_pools]
    return files

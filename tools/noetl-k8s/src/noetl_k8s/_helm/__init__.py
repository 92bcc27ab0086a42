"""The Helm chart (charts/noetl) kept consistent with the renderer without a helm binary.

* ``values.yaml`` is generated from the base profile (:func:`render_values`); the system
  pool is there but ``enabled: false``.
* :func:`profile_from_values` reads values back into a :class:`Profile`, so "the chart's
  values describe the same deployment as k8s/base" is a plain equality of rendered trees.
* :func:`check_template_shapes` and its siblings check the Go templates as text: actions
  balance, functions are known, every ``.Values`` path exists, and each template names
  exactly the kinds, the YAML keys and the env vars that the renderer emits for the same
  workloads.
* :func:`render_chart` executes the templates with a small Go-template interpreter
  (``_gotemplate``) and :func:`compare_chart` diffs the objects against the renderer's;
  :func:`check_chart` runs all of it.

What this does *not* do: run Helm. The interpreter implements the subset the chart uses;
``helm lint`` / ``helm template`` remain the authority (see docs/deploy-kubernetes.md).
"""

from ._chart import check_chart, compare_chart, render_chart
from ._checks import Chart, check_actions, check_template_shapes, check_values_refs, load_chart
from ._values import (
    CHART_DIR,
    VALUES_PATH,
    allow_placeholders,
    default_values,
    profile_from_values,
    render_values,
    values_from_profile,
)

__all__ = [
    "CHART_DIR",
    "VALUES_PATH",
    "Chart",
    "allow_placeholders",
    "check_actions",
    "check_chart",
    "check_template_shapes",
    "check_values_refs",
    "compare_chart",
    "default_values",
    "load_chart",
    "profile_from_values",
    "render_chart",
    "render_values",
    "values_from_profile",
]

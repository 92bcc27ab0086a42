"""A small interpreter for the subset of Go templates (and Helm/Sprig functions) the chart uses.

There is no helm binary on the build machines. This executes ``charts/noetl/templates`` so
the tests can compare the chart's real output with the renderer's. It follows Go's
``text/template`` semantics where the chart depends on them — trim markers, ``define`` /
``include`` (``$`` is the argument), ``if``/``else if``/``else``, ``range`` over maps in
sorted key order and over lists, ``:=`` / ``=`` scoping, pipelines, and numbers from values
as float64 printed like Go's ``%v`` — and it is stricter than Helm elsewhere: a missing
key, an unknown function or a malformed action is an error, never ``<no value>``.

It is not Helm: no ``lookup``, ``tpl``, capabilities or hooks.
"""

from ._render import Chart, Renderer
from ._values import ChartFailed, TemplateError, go_str, helm_values

__all__ = ["Chart", "ChartFailed", "Renderer", "TemplateError", "go_str", "helm_values"]

{{/* Labels of every object: the renderer's three, plus Helm's bookkeeping labels. */}}
{{- define "noetl.labels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: noetl
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | trunc 63 }}
{{- end }}

{{/* Selector labels: stable across upgrades, identical to the rendered manifests. */}}
{{- define "noetl.selector" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/part-of: noetl
{{- end }}

{{/* Pod template labels (no chart version, so an upgrade alone does not roll pods). */}}
{{- define "noetl.podLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: noetl
{{- end }}

{{- define "noetl.image" -}}
{{- if .root.Values.image.registry }}{{ trimSuffix "/" .root.Values.image.registry }}/{{ end }}{{ .name }}:{{ .root.Values.image.tag }}
{{- end }}

{{- define "noetl.serverUrl" -}}
http://noetl-control-api.{{ .Release.Namespace }}.svc.cluster.local:8082
{{- end }}

{{- define "noetl.scrape" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ . | quote }}
prometheus.io/path: /metrics
{{- end }}

{{- define "noetl.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "noetl.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
  - ALL
{{- end }}

{{- define "noetl.resources" -}}
requests:
  cpu: {{ .requests.cpu | quote }}
  memory: {{ .requests.memory | quote }}
limits:
  cpu: {{ .limits.cpu | quote }}
  memory: {{ .limits.memory | quote }}
{{- end }}

{{/* Liveness on /healthz, readiness on /readyz, against a named container port. */}}
{{- define "noetl.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ . }}
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ . }}
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 2
{{- end }}

{{- define "noetl.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end }}

{{/* Prefer replicas on different nodes and zones; never block scheduling for it. */}}
{{- define "noetl.spread" -}}
- maxSkew: 1
  topologyKey: kubernetes.io/hostname
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "noetl.selector" . | nindent 6 }}
- maxSkew: 1
  topologyKey: topology.kubernetes.io/zone
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "noetl.selector" . | nindent 6 }}
{{- end }}

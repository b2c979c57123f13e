{{/* The app name: the chart's, unless nameOverride. */}}
{{- define "ottoscaler.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The objects' name: the release name when it holds the chart's name, else
release-chart; fullnameOverride wins. */}}
{{- define "ottoscaler.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "ottoscaler.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "ottoscaler.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* The ServiceAccount's name. */}}
{{- define "ottoscaler.serviceAccountName" -}}
{{- default (include "ottoscaler.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/* The ConfigMap's name. */}}
{{- define "ottoscaler.configName" -}}
{{- printf "%s-config" (include "ottoscaler.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "ottoscaler.labels" -}}
app.kubernetes.io/name: {{ include "ottoscaler.name" . }}
{{- end }}

{{/* Labels of the scaler's pods, its Deployment, Service and policies; also the
selector. */}}
{{- define "ottoscaler.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ottoscaler.name" . }}
app.kubernetes.io/component: scaler
{{- end }}

{{/* The image: repository@digest when a digest is set (pinned), else repository:tag
(tag defaults to the chart's appVersion). */}}
{{- define "ottoscaler.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The container port: the port of config.http.addr, so the two cannot differ. */}}
{{- define "ottoscaler.httpPort" -}}
{{- .Values.config.http.addr | splitList ":" | last | int }}
{{- end }}

{{/* A TOML key: bare when it may be, else a quoted string. */}}
{{- define "ottoscaler.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/* A TOML value on one line: strings quoted (JSON escapes are TOML's), whole numbers
as integers (Helm reads every number in values.yaml as a float), lists as arrays, maps
as inline tables. A null in a map leaves its key out. */}}
{{- define "ottoscaler.toml.value" -}}
{{- if kindIs "map" . }}
{{- $parts := list }}
{{- range $key := keys . | sortAlpha }}
{{- $value := index $ $key }}
{{- if not (kindIs "invalid" $value) }}
{{- $parts = append $parts (printf "%s = %s" (include "ottoscaler.toml.key" $key) (include "ottoscaler.toml.value" $value)) }}
{{- end }}
{{- end }}
{{- printf "{ %s }" (join ", " $parts) }}
{{- else if kindIs "slice" . }}
{{- $parts := list }}
{{- range . }}
{{- $parts = append $parts (include "ottoscaler.toml.value" .) }}
{{- end }}
{{- printf "[%s]" (join ", " $parts) }}
{{- else if kindIs "string" . }}
{{- toJson . }}
{{- else if kindIs "float64" . }}
{{- if eq (float64 (int64 .)) . }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else if or (kindIs "bool" .) (kindIs "int" .) (kindIs "int64" .) }}
{{- . }}
{{- else }}
{{- fail (printf "config: cannot write %v (%s) as TOML" . (kindOf .)) }}
{{- end }}
{{- end }}

{{/* ottoscaler.toml from .Values.config, with kubernetes.namespace set to the worker
namespace: top-level values first, then one [section] per map. */}}
{{- define "ottoscaler.toml" -}}
{{- $config := deepCopy .Values.config }}
{{- $kubernetes := get $config "kubernetes" | default dict }}
{{- $_ := set $kubernetes "namespace" .Values.workerNamespace.name }}
{{- $_ := set $config "kubernetes" $kubernetes -}}
# Rendered by the Helm chart from .Values.config; every key and its default is in
# ottoscaler.example.toml.
{{- range $key := keys $config | sortAlpha }}
{{- $value := index $config $key }}
{{- if not (or (kindIs "map" $value) (kindIs "invalid" $value)) }}
{{ include "ottoscaler.toml.key" $key }} = {{ include "ottoscaler.toml.value" $value }}
{{- end }}
{{- end }}
{{- range $key := keys $config | sortAlpha }}
{{- $section := index $config $key }}
{{- if kindIs "map" $section }}

[{{ include "ottoscaler.toml.key" $key }}]
{{- range $name := keys $section | sortAlpha }}
{{- $value := index $section $name }}
{{- if not (kindIs "invalid" $value) }}
{{ include "ottoscaler.toml.key" $name }} = {{ include "ottoscaler.toml.value" $value }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The ConfigMap's data: ottoscaler.toml and every extra file (pod spec files). */}}
{{- define "ottoscaler.configData" -}}
ottoscaler.toml: |
{{ include "ottoscaler.toml" . | indent 2 }}
{{- range $name := keys .Values.configFiles | sortAlpha }}
{{- $file := index $.Values.configFiles $name }}
{{ $name }}: |
{{ (kindIs "string" $file) | ternary $file (toYaml $file) | indent 2 }}
{{- end }}
{{- end }}

{{/* Labels of the monitoring objects: the app's and monitoring.labels. */}}
{{- define "ottoscaler.monitoringLabels" -}}
{{ include "ottoscaler.selectorLabels" . }}
{{- with .Values.monitoring.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Chart name, truncated to 63 characters (the DNS label limit).
*/}}
{{- define "processor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. The StatefulSet's pods are named <fullname>-<ordinal>, so keep room
for the ordinal and the controller-revision-hash label: at most 52 characters.
*/}}
{{- define "processor.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart label value.
*/}}
{{- define "processor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "processor.labels" -}}
helm.sh/chart: {{ include "processor.chart" . }}
{{ include "processor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: worker
{{- end }}

{{/*
Selector labels (immutable on a StatefulSet: never add to these).
*/}}
{{- define "processor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "processor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Image reference.
*/}}
{{- define "processor.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Worker config file: workerConfig, overridden by the settings the chart owns.
*/}}
{{- define "processor.workerConfig" -}}
{{- $cfg := deepCopy (.Values.workerConfig | default dict) }}
{{- $_ := unset $cfg "worker_id" }}
{{- $owned := dict
      "bootstrap_servers" (required "kafka.bootstrapServers is required" .Values.kafka.bootstrapServers)
      "processing_guarantee" .Values.processingGuarantee
      "state_dir" "/var/lib/processor/state"
      "metrics_port" (int .Values.metrics.port) }}
{{- toYaml (mustMergeOverwrite $cfg $owned) }}
{{- end }}

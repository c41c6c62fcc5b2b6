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

{{/*
Headless Service: the StatefulSet's serviceName, giving each pod the stable DNS name
<pod>.<fullname>-headless.<namespace>.svc.
*/}}
{{- define "processor.headlessName" -}}
{{- printf "%s-headless" (include "processor.fullname" .) }}
{{- end }}

{{/*
The URL other workers reach this pod's HTTP port at. $(PROCESSOR_WORKER_ID) is expanded by
the kubelet from the env var of that name defined before it (the pod name, downward API).
*/}}
{{- define "processor.advertisedUrl" -}}
{{- $host := printf "$(PROCESSOR_WORKER_ID).%s.%s.svc" (include "processor.headlessName" .) .Release.Namespace }}
{{- with .Values.clusterDomain }}
{{- $host = printf "%s.%s" $host (trimSuffix "." .) }}
{{- end }}
{{- printf "http://%s:%d" $host (int .Values.metrics.port) }}
{{- end }}

{{/*
An HTTP probe on the worker's named port: path, then the probe's timing values.
*/}}
{{- define "processor.httpProbe" -}}
{{- $probe := index . 1 -}}
httpGet:
  path: {{ index . 0 }}
  port: http
  scheme: HTTP
{{- range $k := list "initialDelaySeconds" "periodSeconds" "timeoutSeconds" "failureThreshold" "successThreshold" }}
{{- if hasKey $probe $k }}
{{ $k }}: {{ index $probe $k }}
{{- end }}
{{- end }}
{{- end }}

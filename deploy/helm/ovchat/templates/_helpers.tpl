{{/* The objects' base name: the release's, when it already names ovchat. */}}
{{- define "ovchat.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* What the Deployment, Service, PDB, NetworkPolicy and InferencePool select on. */}}
{{- define "ovchat.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ovchat.labels" -}}
{{ include "ovchat.selectorLabels" . }}
app.kubernetes.io/part-of: ovchat
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "ovchat.secretName" -}}
{{- default (printf "%s-secrets" (include "ovchat.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "ovchat.port" -}}
{{- .Values.config.OVCHAT_PORT | default "8000" | int -}}
{{- end -}}

{{/* preStop + the drain ovchat allows itself + a margin: SIGKILL comes only after. */}}
{{- define "ovchat.gracePeriod" -}}
{{- add (int .Values.drain.preStopSeconds) (int .Values.config.OVCHAT_SHUTDOWN_TIMEOUT_S) (int .Values.drain.marginSeconds) -}}
{{- end -}}

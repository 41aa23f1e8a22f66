{{/* Chart name, shortened to the 63 characters a label value may have. */}}
{{- define "tokenstore.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full resource name: release name plus chart name, unless one contains the other. */}}
{{- define "tokenstore.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tokenstore.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "tokenstore.labels" -}}
helm.sh/chart: {{ include "tokenstore.chart" . }}
{{ include "tokenstore.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tokenstore
{{- end }}

{{/* Selector labels: stable across upgrades, so they never include versions. */}}
{{- define "tokenstore.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tokenstore.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tokenstore.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tokenstore.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The workload-auth ClusterRole and its binding: cluster-scoped names must be unique per release and namespace. */}}
{{- define "tokenstore.workloadAuthName" -}}
{{- printf "%s-%s-workload-auth" .Release.Namespace (include "tokenstore.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tokenstore.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The secret settings, shared by the server and the migration init container. */}}
{{- define "tokenstore.secretEnv" -}}
- name: TOKENSTORE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.existingSecret }}
      key: {{ .Values.existingSecretKeys.databaseURL }}
- name: TOKENSTORE_CRYPTOKEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.existingSecret }}
      key: {{ .Values.existingSecretKeys.cryptoKey }}
{{- end }}

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

{{/* Labels on every object: the chart's own, then commonLabels (which may
     add labels but not replace the selector labels, so that a Service or a
     PodDisruptionBudget never loses its pods). */}}
{{- define "tokenstore.labels" -}}
{{- $labels := dict
      "helm.sh/chart" (include "tokenstore.chart" .)
      "app.kubernetes.io/version" .Chart.AppVersion
      "app.kubernetes.io/managed-by" .Release.Service
      "app.kubernetes.io/part-of" "tokenstore" }}
{{- $labels = merge (include "tokenstore.selectorLabels" . | fromYaml) $labels (deepCopy (.Values.commonLabels | default dict)) }}
{{- toYaml $labels }}
{{- end }}

{{/* Selector labels: stable across upgrades, so they never include versions. */}}
{{- define "tokenstore.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tokenstore.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The server's pods, and only them: the Job and test pods carry the
     release's labels too, and must never receive the Service's traffic or
     count for the PodDisruptionBudget. */}}
{{- define "tokenstore.serverSelectorLabels" -}}
{{ include "tokenstore.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{/* Labels of the server's pods: selector labels, podLabels, commonLabels. */}}
{{- define "tokenstore.podLabels" -}}
{{- $labels := merge (include "tokenstore.serverSelectorLabels" . | fromYaml) (deepCopy (.Values.podLabels | default dict)) (deepCopy (.Values.commonLabels | default dict)) }}
{{- toYaml $labels }}
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

{{/* The namespace whose TokenProviders (and the Secrets they reference) the
     server serves, and where its leader-election Lease and events live. */}}
{{- define "tokenstore.watchNamespace" -}}
{{- default .Release.Namespace .Values.watchNamespace }}
{{- end }}

{{/* The image: pinned by digest when image.digest is set, or when the
     repository already ends in @sha256:… (the tag is then left out, so a
     moved tag cannot change what runs). */}}
{{- define "tokenstore.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else if contains "@" .Values.image.repository }}
{{- .Values.image.repository }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* A secretKeyRef from a `{name, key}` value whose empty fields fall back to
     the settings Secret (existingSecret) and the given key.
     Call with (dict "ref" .Values.x.secretRef "key" "DEFAULT_KEY" "optional" false "root" $). */}}
{{- define "tokenstore.secretKeyRef" -}}
{{- $ref := .ref | default dict -}}
secretKeyRef:
  name: {{ default .root.Values.existingSecret $ref.name | quote }}
  key: {{ default .key $ref.key | quote }}
  {{- if .optional }}
  optional: true
  {{- end }}
{{- end }}

{{/* The secret settings every tokenstore process needs (server, migration
     init container, Jobs): the database and the encryption keys. */}}
{{- define "tokenstore.secretEnv" -}}
- name: TOKENSTORE_DATABASE_URL
  valueFrom:
    {{- include "tokenstore.secretKeyRef" (dict "ref" .Values.database.urlSecretRef "key" .Values.existingSecretKeys.databaseURL "root" .) | nindent 4 }}
- name: TOKENSTORE_CRYPTOKEY
  valueFrom:
    {{- include "tokenstore.secretKeyRef" (dict "key" .Values.existingSecretKeys.cryptoKey "root" .) | nindent 4 }}
{{- end }}

{{/* The names of the Secrets the pods read, each once. */}}
{{- define "tokenstore.secretNames" -}}
{{- $names := list .Values.existingSecret }}
{{- with .Values.database.urlSecretRef.name }}{{ $names = append $names . }}{{ end }}
{{- with .Values.config.oidcClientSecretRef.name }}{{ $names = append $names . }}{{ end }}
{{- toJson ($names | uniq) }}
{{- end }}

{{/* What the pods' settings Secrets are, as far as the chart can know: the
     settingsChecksum value, and the uid and resourceVersion of each Secret
     found by lookup at install or upgrade time. Neither holds or derives
     from a secret value: a hash of the Secrets' data could be brute-forced
     by anyone who may read the Deployment when a Secret holds a weak
     password. lookup finds nothing under `helm template` or a client-side
     dry run; then only settingsChecksum counts. (Where helm may not read
     Secrets, lookup fails the render: lookupSettingsSecrets=false.) Empty
     when there is nothing to go on. */}}
{{- define "tokenstore.settingsVersion" -}}
{{- $parts := list }}
{{- with .Values.settingsChecksum }}{{ $parts = append $parts (printf "value=%s" .) }}{{ end }}
{{- if .Values.lookupSettingsSecrets }}
{{- range (include "tokenstore.secretNames" . | fromJsonArray) }}
{{- $s := lookup "v1" "Secret" $.Release.Namespace . }}
{{- if $s }}
{{- $parts = append $parts (printf "%s=%s/%s" . $s.metadata.uid $s.metadata.resourceVersion) }}
{{- end }}
{{- end }}
{{- end }}
{{- if $parts }}{{ join "," $parts | sha256sum | trunc 16 }}{{ end }}
{{- end }}

{{/* Refuses, at install or render time, values with which no pod could
     start, saying what to set: the server exits at start without the login
     provider, and every pod waits forever for a Secret that has no name. */}}
{{- define "tokenstore.validate" -}}
{{- $env := dict }}
{{- range .Values.extraEnv }}{{ $_ := set $env .name true }}{{ end }}
{{- $problems := list }}
{{- if not (or .Values.config.oidcDiscoveryURL (hasKey $env "TOKENSTORE_OIDC_DISCOVERY_URL")) }}
{{- $problems = append $problems "config.oidcDiscoveryURL is not set: people sign in with OpenID Connect, so the server cannot start without its login provider. Set it to the provider's discovery document, e.g. --set config.oidcDiscoveryURL=https://auth.example.com/realms/example/.well-known/openid-configuration" }}
{{- end }}
{{- if not (or .Values.config.oidcClientID (hasKey $env "TOKENSTORE_OIDC_CLIENT_ID")) }}
{{- $problems = append $problems "config.oidcClientID is not set: set it to the client id registered for tokenstore at the login provider, e.g. --set config.oidcClientID=tokenstore" }}
{{- end }}
{{- if not .Values.existingSecret }}
{{- $problems = append $problems "existingSecret is empty: set it to the name of the Secret you made with DATABASE_URL and CRYPTOKEY (docs/install.md, section 2), e.g. --set existingSecret=tokenstore-settings" }}
{{- end }}
{{- range $host := .Values.ingress.hosts }}
{{- range ($host.paths | default $.Values.ingress.paths) }}
{{- $prefix := ne .pathType "Exact" }}
{{- /* A prefix path routes /metrics when "/metrics" starts with it ("/" does). */}}
{{- if or (eq .path "/metrics") (and $prefix (hasPrefix (trimSuffix "/" .path) "/metrics")) }}
{{- $problems = append $problems (printf "ingress path %q (%s) on host %q would route /metrics through the Ingress: metrics stay inside the cluster. Route the public paths only, as the default ingress.paths do: /api and /ui (Prefix) and / (Exact)" .path .pathType $host.host) }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq (int .Values.metrics.port) 8080 }}
{{- $problems = append $problems "metrics.port is 8080, the API's port: the metrics listener needs a port of its own (the server would not start, the address being in use). Keep the default, e.g. --set metrics.port=9090" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- $problems = append $problems "serviceMonitor.enabled needs metrics.service.enabled: the ServiceMonitor scrapes the metrics Service" }}
{{- end }}
{{- if $problems }}
{{- fail (printf "\n\ntokenstore cannot be installed with these values:\n  - %s\n" (join "\n  - " $problems)) }}
{{- end }}
{{- end }}

{{/* Whether a monitoring.coreos.com object is rendered: always, or only
     when the cluster serves its kind (skipIfMissing), or refusing the
     install when it does not (failIfMissing). Call with (dict "root" $
     "kind" "ServiceMonitor" "mode" .Values.serviceMonitor.renderMode
     "value" "serviceMonitor"). */}}
{{- define "tokenstore.renderMonitoring" -}}
{{- $has := .root.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" .kind) }}
{{- if eq .mode "alwaysRender" }}true
{{- else if $has }}true
{{- else if eq .mode "failIfMissing" }}
{{- fail (printf "\n\n%s.enabled is true but the cluster has no %s kind (monitoring.coreos.com/v1): install the Prometheus Operator's CRDs first, or set %s.renderMode=skipIfMissing to install without it" .value .kind .value) }}
{{- end }}
{{- end }}

{{/* A container running one tokenstore command with the secret settings and
     the extra settings of the server (a settings file given through
     extraEnv and extraVolumeMounts is seen by every command). Call with
     (dict "root" $ "name" "migrate" "args" (list "migrate" "up")). */}}
{{- define "tokenstore.commandContainer" -}}
{{- $ := .root -}}
- name: {{ .name }}
  image: {{ include "tokenstore.image" $ }}
  imagePullPolicy: {{ $.Values.image.pullPolicy }}
  args:
    {{- range .args }}
    - {{ . | quote }}
    {{- end }}
  env:
    {{- include "tokenstore.secretEnv" $ | nindent 4 }}
    {{- with .env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    - name: TOKENSTORE_LOG_LEVEL
      value: {{ $.Values.config.logLevel | quote }}
    - name: TOKENSTORE_LOG_FORMAT
      value: {{ $.Values.config.logFormat | quote }}
    {{- with $.Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $.Values.extraEnvFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $.Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml $.Values.resources | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    {{- with $.Values.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{- define "tokenstore.migrateContainer" -}}
{{- include "tokenstore.commandContainer" (dict "root" . "name" "migrate" "args" (list "migrate" "up")) }}
{{- end }}

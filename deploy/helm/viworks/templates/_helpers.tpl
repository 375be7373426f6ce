{{/*
Chart name, truncated to the 63 characters of a DNS label.
*/}}
{{- define "viworks.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified release name. Component suffixes are at most 14 characters
("-agent-gateway"), so the base is truncated to 49.
*/}}
{{- define "viworks.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 49 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 49 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 49 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version for the helm.sh/chart label.
*/}}
{{- define "viworks.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels shared by every object. Call with the root context.
*/}}
{{- define "viworks.labels" -}}
helm.sh/chart: {{ include "viworks.chart" . }}
{{ include "viworks.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: viworks
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels of the release (all components).
*/}}
{{- define "viworks.selectorLabels" -}}
app.kubernetes.io/name: {{ include "viworks.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of one component's objects. Call with (dict "root" $ "component" "api-server").
*/}}
{{- define "viworks.componentLabels" -}}
{{ include "viworks.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Selector labels of one component. Call with (dict "root" $ "component" "api-server").
*/}}
{{- define "viworks.componentSelectorLabels" -}}
{{ include "viworks.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The components: the values key, the binary (also the object name suffix and the
component label) and the port the binary listens on by default (see each main.go:
service.LoadConfig(fs, args, PORT)).
*/}}
{{- define "viworks.components" -}}
api-server:
  key: apiServer
  port: 8080
agent-gateway:
  key: gateway
  port: 8081
scheduler:
  key: scheduler
  port: 8082
{{- end }}

{{/*
Service account of the services.
*/}}
{{- define "viworks.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "viworks.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The service image.
*/}}
{{- define "viworks.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The key installer's image.
*/}}
{{- define "viworks.installerImage" -}}
{{- $img := .Values.signing.installer.image }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository $img.tag }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding JWT_SECRET, AGENT_ENROLLMENT_SECRET, DATABASE_URL and
REDIS_URL.
*/}}
{{- define "viworks.secretName" -}}
{{- default (include "viworks.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/*
Name of the Secret and key holding the command signing key.
*/}}
{{- define "viworks.signingSecretName" -}}
{{- if .Values.signing.existingSecret }}
{{- .Values.signing.existingSecret }}
{{- else }}
{{- include "viworks.secretName" . }}
{{- end }}
{{- end }}

{{- define "viworks.signingSecretKey" -}}
{{- if .Values.signing.existingSecret }}
{{- .Values.signing.existingSecretKey }}
{{- else }}
{{- "signing.key" }}
{{- end }}
{{- end }}

{{/*
Whether a previous signing key is mounted (key rotation).
*/}}
{{- define "viworks.hasPreviousKey" -}}
{{- if or .Values.signing.previousKeyPEM .Values.signing.previousKeyFromSecret }}true{{ end }}
{{- end }}

{{/*
Checks the secret-related values and fails with a clear message when the signing
key cannot be found. Renders nothing.
*/}}
{{- define "viworks.validate" -}}
{{- $s := .Values.secrets }}
{{- $k := .Values.signing }}
{{- if not $s.existingSecret }}
{{- if not .Values.database.url }}
{{- fail "viworks: set database.url (postgres://USER:PASS@HOST:5432/DB) or secrets.existingSecret (a Secret with DATABASE_URL, REDIS_URL, JWT_SECRET, AGENT_ENROLLMENT_SECRET, ARGS_ENCRYPTION_KEY, signing.key)" }}
{{- end }}
{{- if not .Values.redis.url }}
{{- fail "viworks: set redis.url (redis://HOST:6379/0) or secrets.existingSecret (a Secret with DATABASE_URL, REDIS_URL, JWT_SECRET, AGENT_ENROLLMENT_SECRET, ARGS_ENCRYPTION_KEY, signing.key)" }}
{{- end }}
{{- if and $s.jwtSecret (lt (len $s.jwtSecret) 32) }}
{{- fail "viworks: secrets.jwtSecret must be at least 32 bytes (or leave it empty to generate one)" }}
{{- end }}
{{- if and $s.auditKey (lt (len $s.auditKey) 32) }}
{{- fail "viworks: secrets.auditKey must be at least 32 bytes (or leave it empty to generate one)" }}
{{- end }}
{{- if and $s.auditKey (eq $s.auditKey $s.jwtSecret) }}
{{- fail "viworks: secrets.auditKey must differ from secrets.jwtSecret" }}
{{- end }}
{{- if and $s.enrollmentSecret (lt (len $s.enrollmentSecret) 16) }}
{{- fail "viworks: secrets.enrollmentSecret must be at least 16 bytes (or leave it empty to generate one)" }}
{{- end }}
{{- end }}
{{- if $k.privateKeyPEM }}
{{- if or $s.existingSecret $k.existingSecret }}
{{- fail "viworks: signing.privateKeyPEM cannot be combined with secrets.existingSecret or signing.existingSecret: put the key in that Secret (key signing.key) instead" }}
{{- end }}
{{- if not (contains "-----BEGIN PRIVATE KEY-----" $k.privateKeyPEM) }}
{{- fail "viworks: signing.privateKeyPEM must be an Ed25519 key in PKCS#8 PEM (-----BEGIN PRIVATE KEY-----), as made by: openssl genpkey -algorithm ed25519 -out signing.key" }}
{{- end }}
{{- else if not (or $s.existingSecret $k.existingSecret) }}
{{- fail "viworks: the scheduler needs a command signing key, and Helm cannot generate Ed25519 keys. Make one with `openssl genpkey -algorithm ed25519 -out signing.key` and pass --set-file signing.privateKeyPEM=signing.key, or name a Secret holding it (secrets.existingSecret with key signing.key, or signing.existingSecret)" }}
{{- end }}
{{- if and $k.previousKeyPEM $k.previousKeyFromSecret }}
{{- fail "viworks: set signing.previousKeyPEM or signing.previousKeyFromSecret, not both" }}
{{- end }}
{{- if and $k.previousKeyPEM (or $s.existingSecret $k.existingSecret) }}
{{- fail "viworks: signing.previousKeyPEM needs the chart's own Secret; with an existing Secret put the previous key in it as signing-previous.key and set signing.previousKeyFromSecret=true" }}
{{- end }}
{{- if ge (int .Values.gateway.preStopSleepSeconds) 15 }}
{{- fail "viworks: gateway.preStopSleepSeconds must stay below 15 (the grace period is gateway.drainSeconds + 15)" }}
{{- end }}
{{- end }}

{{/*
The TOML configuration file. Call with (dict "root" $ "component" "agent-gateway").
Keys come from .Values.config (section by section, keys sorted); the gateway's
shutdown_timeout is its drain window.
*/}}
{{- define "viworks.configToml" -}}
{{- $root := .root }}
{{- $cfg := deepCopy $root.Values.config }}
{{- if eq .component "agent-gateway" }}
{{- $_ := set $cfg.server "shutdown_timeout" $root.Values.gateway.drainSeconds }}
{{- end -}}
# viworks configuration for the {{ .component }} ({{ include "viworks.fullname" $root }}).
# Secrets, URLs, the signing key path and the instance id come from the environment.
{{- range $section := list "server" "database" "redis" "security" "agent_management" "command" "telemetry" "logging" }}

[{{ $section }}]
{{- range $k, $v := (get $cfg $section) }}
{{ $k }} = {{ include "viworks.tomlValue" $v }}
{{- end }}
{{- end }}
{{- end }}

{{/*
One TOML value: integers (YAML numbers arrive as float64), booleans, strings and
lists of strings (JSON string escapes are valid TOML).
*/}}
{{- define "viworks.tomlValue" -}}
{{- if kindIs "float64" . }}
{{- if eq (float64 (int64 .)) . }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else if or (kindIs "int" .) (kindIs "int64" .) (kindIs "bool" .) }}
{{- . }}
{{- else }}
{{- toJson . }}
{{- end }}
{{- end }}

{{/*
Environment of a service container. Call with (dict "root" $ "component" NAME).
*/}}
{{- define "viworks.env" -}}
{{- $root := .root }}
{{- $secret := include "viworks.secretName" $root -}}
- name: VIWORKS_INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: DATABASE_URL
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: REDIS_URL
- name: JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: JWT_SECRET
{{- if or (eq .component "api-server") (eq .component "scheduler") }}
- name: ARGS_ENCRYPTION_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: ARGS_ENCRYPTION_KEY
{{- end }}
{{- include "viworks.auditKeyEnv" $secret }}
{{- if eq .component "agent-gateway" }}
- name: AGENT_ENROLLMENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: AGENT_ENROLLMENT_SECRET
{{- end }}
{{- if eq .component "scheduler" }}
- name: BACKEND_PRIVATE_KEY_PATH
  value: /etc/viworks/keys/signing.key
{{- if include "viworks.hasPreviousKey" $root }}
- name: BACKEND_PREVIOUS_KEY_PATH
  value: /etc/viworks/keys/signing-previous.key
{{- end }}
{{- end }}
{{- end }}

{{/*
The audit chain's keys (every role appends audit events). Takes the Secret's name.
*/}}
{{- define "viworks.auditKeyEnv" }}
- name: AUDIT_HMAC_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AUDIT_HMAC_KEY
- name: AUDIT_HMAC_PREVIOUS_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AUDIT_HMAC_PREVIOUS_KEYS
      optional: true
{{- end }}

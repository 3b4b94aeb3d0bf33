{{- define "tessera.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tessera.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tessera.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "tessera.fullname" .)) -}}
{{- end -}}

{{- define "tessera.image" -}}
{{- $root := index . 0 -}}{{- $target := index . 1 -}}
{{- printf "%s-%s:%s" $root.Values.image.repository $target $root.Values.image.tag -}}
{{- end -}}

{{/* Settings read from the Secret's files: TESSERA_<SETTING>_FILE -> <mountPath>/<key>. */}}
{{- define "tessera.secretFiles" -}}
{{- $keys := list "auth-tokens" "service-token" "pg-dsn" -}}
{{- if hasPrefix "s3://" .Values.artifacts.uri -}}
{{- $keys = concat $keys (list "registry-s3-access-key-id" "registry-s3-secret-access-key") -}}
{{- end -}}
{{- range $keys }}
- name: TESSERA_{{ . | upper | replace "-" "_" }}_FILE
  value: {{ printf "%s/%s" $.Values.secrets.mountPath . | quote }}
{{- end }}
{{- end -}}

{{- define "tessera.grpcProbes" -}}
{{- $port := .grpcPort -}}
startupProbe:
  grpc: {port: {{ $port }}}
  periodSeconds: 5
  failureThreshold: {{ div (.startupSeconds | default 120) 5 }}
readinessProbe:
  grpc: {port: {{ $port }}}
  periodSeconds: 10
  failureThreshold: 3
livenessProbe:
  grpc: {port: {{ $port }}}
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 3
{{- end -}}

{{/* A process without a gRPC port (the training worker) touches .aliveFile from its loop; it is alive while
the file is younger than .aliveMaxAgeSeconds. */}}
{{- define "tessera.aliveProbes" -}}
{{- $check := list "python" "infra/docker/healthcheck.py" "--alive-file" .aliveFile (toString (.aliveMaxAgeSeconds | default 30)) -}}
startupProbe:
  exec: {command: {{ toJson $check }}}
  periodSeconds: 5
  failureThreshold: {{ div (.startupSeconds | default 120) 5 }}
livenessProbe:
  exec: {command: {{ toJson $check }}}
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 3
{{- end -}}

{{- define "tessera.trainingDataClaim" -}}
{{- .Values.trainingData.existingClaim | default (printf "%s-training-data" (include "tessera.fullname" .)) -}}
{{- end -}}

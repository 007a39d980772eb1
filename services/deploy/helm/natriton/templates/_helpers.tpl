{{/*
The four services, in the order a request passes them.
*/}}
{{- define "natriton.services" -}}
ingest preprocess router postprocess
{{- end }}

{{/*
The uid and gid of the image's user (services/Dockerfile: USER 10001:10001).
*/}}
{{- define "natriton.uid" -}}
10001
{{- end }}

{{- define "natriton.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
<release>-natriton, or the release name alone when it already contains the chart name. Kept short enough for
"-postprocess" to be added within the 63 characters of a DNS label.
*/}}
{{- define "natriton.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A service's resource name. Call with (list $ "router").
*/}}
{{- define "natriton.componentName" -}}
{{- printf "%s-%s" (include "natriton.fullname" (index . 0)) (index . 1) }}
{{- end }}

{{- define "natriton.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels of a service's resources. Call with (list $ "router").
*/}}
{{- define "natriton.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "natriton.chart" $root }}
{{ include "natriton.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: natriton
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
{{- end }}

{{/*
Labels selecting one service's pods. Call with (list $ "router").
*/}}
{{- define "natriton.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "natriton.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/*
Labels of the release's resources that belong to no one service.
*/}}
{{- define "natriton.commonLabels" -}}
helm.sh/chart: {{ include "natriton.chart" . }}
app.kubernetes.io/name: {{ include "natriton.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: natriton
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "natriton.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "natriton.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "natriton.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Whether a service is autoscaled ("true" or ""). Call with a service's values.
*/}}
{{- define "natriton.autoscaled" -}}
{{- if or .autoscaling.hpa.enabled .autoscaling.keda.enabled }}true{{ end }}
{{- end }}

{{/*
Whether the router mounts a model repository ("true" or "").
*/}}
{{- define "natriton.hasModelRepository" -}}
{{- if or .Values.modelRepository.existingClaim .Values.modelRepository.volume }}true{{ end }}
{{- end }}

{{/*
The container environment of a service. Call with (list $ "router"). The chart's own variables come first; the
service's `env` values add to them and may not replace one (each has its own key in values.yaml).
*/}}
{{- define "natriton.env" -}}
{{- $root := index . 0 }}
{{- $name := index . 1 }}
{{- $values := $root.Values }}
{{- $svc := index $values $name }}
{{- $managed := list "NATRITON_NATS_URL" "NATRITON_NATS_CREDS_FILE" "NATRITON_LOG_LEVEL" "NATRITON_LOG_FORMAT" "NATRITON_METRICS_PORT" "NATRITON_DRAIN_TIMEOUT_S" "NATRITON_REDIS_URL" "NATRITON_TRITON_GRPC_URL" "NATRITON_MODEL_REPOSITORY" "OTEL_EXPORTER_OTLP_ENDPOINT" "OTEL_TRACES_SAMPLER" "OTEL_TRACES_SAMPLER_ARG" "OTEL_RESOURCE_ATTRIBUTES" }}
{{- range $key, $value := $svc.env }}
{{- if has $key $managed }}
{{- fail (printf "%s.env.%s: the chart sets %s itself; use its own key in values.yaml" $name $key $key) }}
{{- end }}
{{- end }}
- name: NATRITON_NATS_URL
  value: {{ $values.natsUrl | quote }}
{{- if $values.natsCreds.secretName }}
- name: NATRITON_NATS_CREDS_FILE
  value: /etc/natriton/nats/nats.creds
{{- end }}
{{- if has $name (list "ingest" "preprocess" "router" "postprocess") }}
{{- if $values.redisUrlSecret.secretName }}
- name: NATRITON_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $values.redisUrlSecret.secretName }}
      key: {{ $values.redisUrlSecret.secretKey }}
{{- else }}
- name: NATRITON_REDIS_URL
  value: {{ $values.redisUrl | quote }}
{{- end }}
{{- end }}
{{- if eq $name "router" }}
- name: NATRITON_TRITON_GRPC_URL
  value: {{ $values.tritonGrpcUrl | quote }}
{{- if include "natriton.hasModelRepository" $root }}
- name: NATRITON_MODEL_REPOSITORY
  value: {{ $values.modelRepository.mountPath | quote }}
{{- end }}
{{- end }}
- name: NATRITON_LOG_LEVEL
  value: {{ $values.logLevel | quote }}
- name: NATRITON_LOG_FORMAT
  value: {{ $values.logFormat | quote }}
- name: NATRITON_METRICS_PORT
  value: {{ $values.metricsPort | int | toString | quote }}
- name: NATRITON_DRAIN_TIMEOUT_S
  value: {{ $values.drainTimeoutSeconds | int | toString | quote }}
{{- if $values.otel.endpoint }}
- name: K8S_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: K8S_NAMESPACE_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $values.otel.endpoint | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $values.otel.sampler | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $values.otel.samplerArg | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "k8s.pod.name=$(K8S_POD_NAME),k8s.namespace.name=$(K8S_NAMESPACE_NAME)%s" (ternary (printf ",%s" $values.otel.resourceAttributes) "" (ne $values.otel.resourceAttributes "")) | quote }}
{{- end }}
{{- range $key := keys $svc.env | sortAlpha }}
- name: {{ $key }}
  value: {{ index $svc.env $key | quote }}
{{- end }}
{{- end }}

{{/*
Refuse values the schema cannot express. Call with (list $ "router").
*/}}
{{- define "natriton.check" -}}
{{- $root := index . 0 }}
{{- $name := index . 1 }}
{{- $svc := index $root.Values $name }}
{{- $auto := $svc.autoscaling }}
{{- if and $auto.hpa.enabled $auto.keda.enabled }}
{{- fail (printf "%s.autoscaling: enable hpa or keda, not both (KEDA runs its own HorizontalPodAutoscaler)" $name) }}
{{- end }}
{{- if gt (int $auto.minReplicas) (int $auto.maxReplicas) }}
{{- fail (printf "%s.autoscaling: minReplicas (%d) is above maxReplicas (%d)" $name (int $auto.minReplicas) (int $auto.maxReplicas)) }}
{{- end }}
{{- if and $auto.hpa.enabled (not (and $svc.resources.requests $svc.resources.requests.cpu)) }}
{{- fail (printf "%s.autoscaling.hpa: CPU utilisation needs %s.resources.requests.cpu" $name $name) }}
{{- end }}
{{- if and $auto.keda.enabled (not $root.Values.keda.prometheusServerAddress) }}
{{- fail (printf "%s.autoscaling.keda: set keda.prometheusServerAddress (the Prometheus scraping the services)" $name) }}
{{- end }}
{{- if and $auto.keda.enabled $auto.keda.jetstream (not $root.Values.keda.natsServerMonitoringEndpoint) }}
{{- fail (printf "%s.autoscaling.keda.jetstream: set keda.natsServerMonitoringEndpoint (NATS' monitoring host:port)" $name) }}
{{- end }}
{{- end }}

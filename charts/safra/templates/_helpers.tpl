{{/*
Shared pieces of the Safra chart: names, labels, the image, the table of
components (the five services and the gateway, each merged over
.Values.defaults), who calls whom, and the environment each process reads.
*/}}

{{/* The chart's name, or nameOverride. */}}
{{- define "safra.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource: the release name, or release-chart. */}}
{{- define "safra.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "safra.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "safra.labels" -}}
helm.sh/chart: {{ include "safra.chart" . }}
app.kubernetes.io/name: {{ include "safra.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: safra
{{- end }}

{{/* Selector labels of one component: pass (list $ "<component>"). */}}
{{- define "safra.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "safra.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Every label of one component's resources: pass (list $ "<component>"). */}}
{{- define "safra.componentLabels" -}}
{{ include "safra.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* The image reference: repository@digest, else repository:tag. */}}
{{- define "safra.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "safra.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "safra.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The mesh's services in start-up order; the binary knows no others. */}}
{{- define "safra.serviceNames" -}}
accounts marketplace wallet distribution notifications
{{- end }}

{{/*
The components as JSON {"items": [...]}: each enabled service and the gateway,
its settings merged over .Values.defaults, with "name", "isGateway" and
"callers" (the components whose calls its network policy admits). A peer that
is not a service of the mesh, or is disabled, fails the render.
*/}}
{{- define "safra.components" -}}
{{- $root := . -}}
{{- $names := splitList " " (include "safra.serviceNames" .) -}}
{{- $enabled := list -}}
{{- range $names }}
{{- if (index $root.Values.services .).enabled }}
{{- $enabled = append $enabled . }}
{{- end }}
{{- end }}
{{- $items := list -}}
{{- range $name := $enabled }}
{{- $svc := index $root.Values.services $name -}}
{{- range $peer := $svc.peers }}
{{- if not (has $peer $enabled) }}
{{- fail (printf "services.%s.peers names %q, which is not an enabled service of the mesh" $name $peer) }}
{{- end }}
{{- end }}
{{- $callers := list -}}
{{- if $root.Values.gateway.enabled }}
{{- $callers = append $callers "gateway" }}
{{- end }}
{{- range $other := $enabled }}
{{- $o := index $root.Values.services $other -}}
{{- if and (ne $other $name) (or (eq $name "accounts") (has $name $o.peers)) }}
{{- $callers = append $callers $other }}
{{- end }}
{{- end }}
{{- $c := mergeOverwrite (deepCopy $root.Values.defaults) (deepCopy $svc) -}}
{{- $_ := set $c "name" $name -}}
{{- $_ := set $c "isGateway" false -}}
{{- $_ := set $c "callers" $callers -}}
{{- $items = append $items $c }}
{{- end }}
{{- if .Values.gateway.enabled }}
{{- $g := mergeOverwrite (deepCopy .Values.defaults) (deepCopy .Values.gateway) -}}
{{- $_ := set $g "name" "gateway" -}}
{{- $_ := set $g "isGateway" true -}}
{{- $_ := set $g "peers" $enabled -}}
{{- $_ := set $g "callers" (list) -}}
{{- $items = append $items $g }}
{{- end }}
{{- dict "items" $items | toJson }}
{{- end }}

{{/* The gRPC port of service <name>: pass (list $ "<name>"). */}}
{{- define "safra.grpcPort" -}}
{{- (index (index . 0).Values.services (index . 1)).grpcPort | int }}
{{- end }}

{{/*
SAFRA_<PEER>_URL for one peer: a dns:// endpoint over the peer's headless
Service, re-resolved by the client, which balances over every ready pod.
Pass (list $ "<peer>").
*/}}
{{- define "safra.peerEnv" -}}
{{- $root := index . 0 -}}
{{- $peer := index . 1 -}}
- name: SAFRA_{{ upper $peer }}_URL
  value: {{ printf "dns://%s-%s-headless:%s" (include "safra.fullname" $root) $peer (include "safra.grpcPort" (list $root $peer)) | quote }}
{{- end }}

{{/* The TLS and logging variables every process reads. */}}
{{- define "safra.commonEnv" -}}
- name: SAFRA_TLS_CERT
  value: {{ printf "%s/tls.crt" .Values.tls.mountPath | quote }}
- name: SAFRA_TLS_KEY
  value: {{ printf "%s/tls.key" .Values.tls.mountPath | quote }}
- name: SAFRA_TLS_CA
  {{- if .Values.tls.trustBundle.configMapName }}
  value: {{ printf "/etc/safra/trust/%s" .Values.tls.trustBundle.key | quote }}
  {{- else }}
  value: {{ printf "%s/ca.crt" .Values.tls.mountPath | quote }}
  {{- end }}
- name: SAFRA_TLS_RELOAD_SECS
  value: {{ .Values.mesh.tlsReloadSeconds | int | quote }}
- name: SAFRA_JWT_ISSUER
  value: {{ .Values.mesh.jwtIssuer | quote }}
- name: SAFRA_LOG_FORMAT
  value: {{ .Values.mesh.logFormat | quote }}
- name: RUST_LOG
  value: {{ .Values.mesh.logLevel | quote }}
{{- with .Values.mesh.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end }}

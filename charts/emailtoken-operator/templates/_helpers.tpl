{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "emailtoken.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the prefix of every resource name. Kept to 54 characters so that
"<fullname>-callback" still fits into 63.
*/}}
{{- define "emailtoken.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "emailtoken.callbackName" -}}
{{- printf "%s-callback" (include "emailtoken.fullname" .) }}
{{- end }}

{{- define "emailtoken.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels of a component. Call with (dict "ctx" $ "component" "operator").
*/}}
{{- define "emailtoken.selectorLabels" -}}
app.kubernetes.io/name: {{ include "emailtoken.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Standard labels of a component, plus the installer's commonLabels (the schema keeps them
off the chart's own keys). Call with (dict "ctx" $ "component" "operator").
*/}}
{{- define "emailtoken.labels" -}}
helm.sh/chart: {{ include "emailtoken.chart" .ctx }}
{{ include "emailtoken.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: emailtoken-operator
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
A component's topologySpreadConstraints, each without a labelSelector given the
component's selector labels (a constraint must select the pods it spreads).
Call with (dict "ctx" $ "component" "operator" "constraints" LIST).
*/}}
{{- define "emailtoken.topologySpread" -}}
{{- $selector := include "emailtoken.selectorLabels" . | fromYaml }}
{{- $out := list }}
{{- range .constraints }}
{{- $c := deepCopy . }}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $selector) }}
{{- end }}
{{- $out = append $out $c }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{- define "emailtoken.operatorServiceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "emailtoken.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "emailtoken.callbackServiceAccountName" -}}
{{- if .Values.callback.serviceAccount.create }}
{{- default (include "emailtoken.callbackName" .) .Values.callback.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.callback.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: repository@digest when a digest is set, else repository:tag with the
tag defaulting to the appVersion (never "latest").
*/}}
{{- define "emailtoken.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Pod security context of the "restricted" Pod Security Standard, for every pod.
*/}}
{{- define "emailtoken.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Container security context of the "restricted" Pod Security Standard, for every container.
*/}}
{{- define "emailtoken.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
The RBAC table generated from operator/emailtoken/rbac.py (see files/rbac.yaml).
*/}}
{{- define "emailtoken.rbacTable" -}}
{{- .Files.Get "files/rbac.yaml" }}
{{- end }}

{{/*
PolicyRules of one component in the current mode, as YAML.
Call with (dict "ctx" $ "component" "operator").
*/}}
{{- define "emailtoken.rules" -}}
{{- $table := include "emailtoken.rbacTable" .ctx | fromYaml }}
{{- $component := get $table .component }}
{{- $rules := get $component "namespaced" }}
{{- if and (eq .component "callback") (.ctx.Values.callback.manageTokens | default dict).enabled }}
{{- $rules = concat $rules (get $component "tokenWriter") }}
{{- end }}
{{- if (.ctx.Values.providers.federatedCredential | default dict).enabled }}
{{- $rules = concat $rules (get $component "federation") }}
{{- end }}
{{- toYaml $rules }}
{{- end }}

{{/*
PolicyRules of one component in its own (release) namespace, as YAML: the
"releaseNamespace" rows (the operator's Lease). Call with (dict "ctx" $ "component" "operator").
*/}}
{{- define "emailtoken.releaseNamespaceRules" -}}
{{- $table := include "emailtoken.rbacTable" .ctx | fromYaml }}
{{- toYaml (get (get $table .component) "releaseNamespace") }}
{{- end }}

{{/*
Host of callback.redirectBaseUrl (without the port).
*/}}
{{- define "emailtoken.redirectHost" -}}
{{- $url := urlParse .Values.callback.redirectBaseUrl }}
{{- (split ":" $url.host)._0 }}
{{- end }}

{{/*
Egress both components need: DNS, the API server, the providers over HTTPS.
*/}}
{{- define "emailtoken.egressRules" -}}
# DNS, to any resolver (cluster DNS runs in kube-system on most clusters).
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
# The Kubernetes API server.
- to:
    {{- range .Values.networkPolicy.apiServer.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    {{- range .Values.networkPolicy.apiServer.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
# The identity providers' token endpoints (HTTPS).
- to:
    {{- range .Values.networkPolicy.providers.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    {{- range .Values.networkPolicy.providers.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end }}

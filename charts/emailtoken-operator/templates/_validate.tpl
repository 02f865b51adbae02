{{/*
Combinations the schema cannot express. "emailtoken.validate" is included by the
callback Deployment, "emailtoken.validateOperator" by the operator Deployment.
*/}}
{{- define "emailtoken.validateOperator" -}}
{{- if and (gt (int .Values.operator.replicaCount) 1) (not .Values.operator.leaderElection.enabled) }}
{{- fail "operator.replicaCount > 1 needs operator.leaderElection.enabled: without the Lease every replica would refresh the same tokens and spend the same rotating refresh tokens" }}
{{- end }}
{{- if and .Values.operator.prometheusRule.enabled (not .Values.operator.serviceMonitor.enabled) }}
{{- fail "operator.prometheusRule.enabled needs operator.serviceMonitor.enabled: the alerts select the series that ServiceMonitor scrapes" }}
{{- end }}
{{- $fed := .Values.providers.federatedToken | default dict }}
{{- if and $fed.ambientNamespaces (not $fed.enabled) }}
{{- fail "providers.federatedToken.ambientNamespaces needs providers.federatedToken.enabled: the pods' own token is what those namespaces would use" }}
{{- end }}
{{- end }}

{{- define "emailtoken.validate" -}}
{{- $url := urlParse .Values.callback.redirectBaseUrl }}
{{- if and .Values.callback.ingress.enabled (ne $url.scheme "https") }}
{{- fail "callback.redirectBaseUrl must start with https:// when callback.ingress.enabled is true: Microsoft and Google accept http:// redirect URIs only for localhost" }}
{{- end }}
{{- if and (gt (int .Values.callback.replicaCount) 1) (not .Values.callback.stateKeySecret.name) }}
{{- fail "callback.replicaCount > 1 needs callback.stateKeySecret.name: every replica must open the OAuth state sealed by any other" }}
{{- end }}
{{- if eq (int .Values.callback.publicPort) (int .Values.callback.adminPort) }}
{{- fail "callback.publicPort and callback.adminPort must differ" }}
{{- end }}
{{- end }}

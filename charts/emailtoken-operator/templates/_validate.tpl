{{/*
Combinations the schema cannot express. Included by the callback Deployment.
*/}}
{{- define "emailtoken.validate" -}}
{{- $url := urlParse .Values.callback.redirectBaseUrl }}
{{- if and .Values.callback.ingress.enabled (ne $url.scheme "https") }}
{{- fail "callback.redirectBaseUrl must start with https:// when callback.ingress.enabled is true: Microsoft and Google accept http:// redirect URIs only for localhost" }}
{{- end }}
{{- if and (gt (int .Values.callback.replicaCount) 1) (not .Values.callback.stateKeySecret.name) }}
{{- fail "callback.replicaCount > 1 needs callback.stateKeySecret.name: every replica must verify the OAuth state signed by any other" }}
{{- end }}
{{- if eq (int .Values.callback.publicPort) (int .Values.callback.adminPort) }}
{{- fail "callback.publicPort and callback.adminPort must differ" }}
{{- end }}
{{- end }}

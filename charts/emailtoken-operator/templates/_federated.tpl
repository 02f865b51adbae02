{{/*
Workload identity federation (EmailToken spec.federatedCredential; docs/federated-credentials.md):
the pod's own projected ServiceAccount tokens ("ambient" mode, for providers.federatedToken.
ambientNamespaces only), one file per audience, rotated by the kubelet and read afresh by the
process for every request. Used by both Deployments.
*/}}
{{- define "emailtoken.federatedTokenDir" -}}
/var/run/secrets/emailtoken.io/federated
{{- end }}

{{/*
The installer's rules for spec.federatedCredential (emailtoken.clientauth): the audiences a
token may be requested for, and the namespaces that may use the pod's own ("ambient") token.
*/}}
{{- define "emailtoken.federatedTokenArgs" -}}
{{- $fed := .Values.providers.federatedToken | default dict }}
{{- range (.Values.providers.federatedCredential | default dict).allowedAudiences }}
- --federation-audience
- {{ . | quote }}
{{- end }}
{{- if $fed.enabled }}
{{- range $i, $audience := $fed.audiences }}
- --federated-token-file
- {{ include "emailtoken.federatedTokenDir" $ }}/token-{{ $i }}
{{- end }}
{{- range $fed.ambientNamespaces }}
- --ambient-federation-namespace
- {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- define "emailtoken.federatedTokenMount" -}}
{{- if (.Values.providers.federatedToken | default dict).enabled }}
- name: federated-token
  mountPath: {{ include "emailtoken.federatedTokenDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "emailtoken.federatedTokenVolume" -}}
{{- $fed := .Values.providers.federatedToken | default dict }}
{{- if $fed.enabled }}
- name: federated-token
  projected:
    defaultMode: 0440
    sources:
      {{- range $i, $audience := $fed.audiences }}
      - serviceAccountToken:
          audience: {{ $audience | quote }}
          expirationSeconds: {{ $fed.expirationSeconds | default 3600 }}
          path: token-{{ $i }}
      {{- end }}
{{- end }}
{{- end }}

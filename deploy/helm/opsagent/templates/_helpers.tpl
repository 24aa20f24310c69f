{{/* The release-qualified base name, within the 63 characters Kubernetes allows. */}}
{{- define "opsagent.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "opsagent.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "opsagent.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "opsagent.readerName" -}}
{{- default (printf "%s-reader" (include "opsagent.fullname" .)) .Values.serviceAccounts.reader.name -}}
{{- end -}}

{{- define "opsagent.executorName" -}}
{{- default (printf "%s-executor" (include "opsagent.fullname" .)) .Values.serviceAccounts.executor.name -}}
{{- end -}}

{{- define "opsagent.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Environment: secrets by reference (only the keys that are named), nothing inline. */}}
{{- define "opsagent.secretEnv" -}}
{{- $s := .Values.secrets -}}
{{- range $env, $key := dict "OPSAGENT_STORE__URL" $s.storeUrlKey "OPSAGENT_AUDIT__KEY" $s.auditKeyKey "OPSAGENT_SERVER__AUTH_TOKENS" $s.webhookTokensKey "OPSAGENT_SERVER__BASIC_AUTH" $s.webhookBasicAuthKey "OPSAGENT_SLACK__BOT_TOKEN" $s.slackBotTokenKey "OPSAGENT_SLACK__SIGNING_SECRET" $s.slackSigningSecretKey "OPSAGENT_LLM__API_KEY" $s.llmApiKeyKey "AWS_ACCESS_KEY_ID" $s.awsAccessKeyIdKey "AWS_SECRET_ACCESS_KEY" $s.awsSecretAccessKeyKey }}
{{- if $key }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ $s.existingSecret }}
      key: {{ $key }}
{{- end }}
{{- end }}
- name: OPSAGENT_CONFIG
  value: /etc/opsagent/config/config.yaml
{{- end -}}

{{/* The executor container's secrets: the store, the audit key and AWS keys (it appends audit records
and exports checkpoints), and the webhook credentials only because settings outside dev require them.
Never the Slack or model-provider secrets: the executor parses neither. */}}
{{- define "opsagent.executorSecretEnv" -}}
{{- $s := .Values.secrets -}}
{{- range $env, $key := dict "OPSAGENT_STORE__URL" $s.storeUrlKey "OPSAGENT_AUDIT__KEY" $s.auditKeyKey "OPSAGENT_SERVER__AUTH_TOKENS" $s.webhookTokensKey "OPSAGENT_SERVER__BASIC_AUTH" $s.webhookBasicAuthKey "AWS_ACCESS_KEY_ID" $s.awsAccessKeyIdKey "AWS_SECRET_ACCESS_KEY" $s.awsSecretAccessKeyKey }}
{{- if $key }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ $s.existingSecret }}
      key: {{ $key }}
{{- end }}
{{- end }}
- name: OPSAGENT_CONFIG
  value: /etc/opsagent/config/config.yaml
{{- end -}}

{{/* Volumes every opsagent container mounts: settings, policies, runbooks, kubeconfigs, state. */}}
{{- define "opsagent.volumes" -}}
- name: config
  configMap:
    name: {{ include "opsagent.fullname" . }}-config
- name: policies
  configMap:
    name: {{ include "opsagent.fullname" . }}-policies
- name: runbooks
  configMap:
    name: {{ include "opsagent.fullname" . }}-runbooks
- name: state
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "opsagent.volumeMounts" -}}
- {name: config, mountPath: /etc/opsagent/config, readOnly: true}
- {name: policies, mountPath: /etc/opsagent/policies, readOnly: true}
- {name: runbooks, mountPath: /etc/opsagent/runbooks, readOnly: true}
- {name: state, mountPath: /var/lib/opsagent}
- {name: tmp, mountPath: /tmp}
{{- end -}}

{{/*
Names and labels, after the conventions of `helm create`.
*/}}
{{- define "riposte.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "riposte.fullname" -}}
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

{{- define "riposte.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "riposte.selectorLabels" -}}
app.kubernetes.io/name: {{ include "riposte.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "riposte.labels" -}}
helm.sh/chart: {{ include "riposte.chart" . }}
{{ include "riposte.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: riposte
{{- end }}

{{/* Labels of one component (api, worker): call with (dict "ctx" $ "component" "api"). */}}
{{- define "riposte.componentLabels" -}}
{{ include "riposte.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "riposte.componentSelectorLabels" -}}
{{ include "riposte.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "riposte.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "riposte.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "riposte.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The store. "true" when Riposte uses Redis (the bundled one or an external one), "" for SQLite.
Templates test it with `if include "riposte.redis" .`.
*/}}
{{- define "riposte.redis" -}}
{{- if or .Values.redis.enabled .Values.externalRedis.url .Values.externalRedis.existingSecret }}true{{ end }}
{{- end }}

{{/* Whether a worker Deployment runs (Redis with workers.enabled). */}}
{{- define "riposte.workers" -}}
{{- if and (include "riposte.redis" .) .Values.workers.enabled }}true{{ end }}
{{- end }}

{{/* The bundled Redis's Service and password Secret: the subchart names them <release>-redis. */}}
{{- define "riposte.bundledRedisName" -}}
{{- printf "%s-redis" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Secret the chart makes for environment variables (webhook, plugin, API token secrets). */}}
{{- define "riposte.envSecretName" -}}
{{- printf "%s-env" (include "riposte.fullname" .) }}
{{- end }}

{{- define "riposte.metricsSecretName" -}}
{{- if .Values.metrics.token.existingSecret }}
{{- .Values.metrics.token.existingSecret }}
{{- else }}
{{- printf "%s-metrics" (include "riposte.fullname" .) }}
{{- end }}
{{- end }}

{{/* A name as an environment variable suffix: upper case, `-` as `_`. */}}
{{- define "riposte.envSuffix" -}}
{{- . | upper | replace "-" "_" }}
{{- end }}

{{/*
Checks across values that values.schema.json cannot express with a clear message. Rendered by
configmap.yaml, which every install renders, so a bad combination fails before anything is
applied.
*/}}
{{- define "riposte.validate" -}}
{{- if and .Values.redis.enabled (or .Values.externalRedis.url .Values.externalRedis.existingSecret) }}
{{- fail "redis.enabled and externalRedis are both set: choose the bundled Redis or an external one" }}
{{- end }}
{{- if and .Values.externalRedis.url .Values.externalRedis.existingSecret }}
{{- fail "externalRedis.url and externalRedis.existingSecret are both set: give the URL one way" }}
{{- end }}
{{- if not (include "riposte.redis" .) }}
{{- if gt (int .Values.api.replicas) 1 }}
{{- fail (printf "api.replicas is %d but the store is SQLite, which only one process may use: set api.replicas to 1, or configure Redis (redis.enabled or externalRedis) to scale out" (int .Values.api.replicas)) }}
{{- end }}
{{- if .Values.api.autoscaling.enabled }}
{{- fail "api.autoscaling.enabled needs Redis: the SQLite store allows one process only (set redis.enabled or externalRedis)" }}
{{- end }}
{{- if .Values.workers.enabled }}
{{- fail "workers.enabled needs Redis: with the SQLite store the single pod runs the workers in-process (set redis.enabled or externalRedis, or workers.enabled=false)" }}
{{- end }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.host) }}
{{- fail "ingress.enabled is true but ingress.host is empty: give the host webhooks are sent to" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled .Values.metrics.token.existingSecret (not .Values.metrics.token.sha256) }}
{{- fail "metrics.token.existingSecret is set but metrics.token.sha256 is empty: the server knows API tokens by their SHA-256 (sha256sum of the token)" }}
{{- end }}
{{- if and .Values.plugins.extra.volume .Values.plugins.extra.initContainer.image }}
{{- fail "plugins.extra.volume and plugins.extra.initContainer.image are both set: choose one" }}
{{- end }}
{{- end }}

{{/*
Paths inside the containers. The image sets some RIPOSTE_* variables itself, and variables win
over the config file, so the chart sets them as variables too (see riposte.env).
*/}}
{{- define "riposte.configPath" -}}/etc/riposte/config/riposte.yaml{{- end }}

{{/*
The playbooks folder. A ConfigMap volume also links its keys through hidden `..data` folders;
the server skips names starting with `.`, so it reads each playbook once.
*/}}
{{- define "riposte.playbooksPath" -}}/etc/riposte/playbooks{{- end }}

{{- define "riposte.pluginsPath" -}}
{{- if or .Values.plugins.extra.volume .Values.plugins.extra.initContainer.image }}/opt/riposte/extra-plugins{{ else }}/opt/riposte/plugins{{ end }}
{{- end }}

{{- define "riposte.dataPath" -}}/var/lib/riposte{{- end }}

{{/*
Environment of every Riposte container. Secret values only ever come through secretKeyRef or
envFrom (riposte.envFrom); plain `value`s here are paths, names and the log filter.
*/}}
{{- define "riposte.env" -}}
- name: RIPOSTE_LISTEN
  value: 0.0.0.0:8080
- name: RIPOSTE_PLAYBOOKS
  value: {{ include "riposte.playbooksPath" . | quote }}
- name: RIPOSTE_PLUGINS
  value: {{ include "riposte.pluginsPath" . | quote }}
- name: RIPOSTE_DATA_DIR
  value: {{ include "riposte.dataPath" . | quote }}
- name: RIPOSTE_LOG
  value: {{ .Values.logLevel | quote }}
{{- if .Values.redis.enabled }}
{{- /* The password comes from the Secret; Kubernetes expands $(REDIS_PASSWORD) in the URL when the container starts, so the pod spec holds no secret. */}}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ default (include "riposte.bundledRedisName" .) .Values.redis.auth.existingSecret }}
      key: {{ .Values.redis.auth.existingSecretKey }}
- name: RIPOSTE_REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s:6379/0" (include "riposte.bundledRedisName" .) | quote }}
{{- else if or .Values.externalRedis.url .Values.externalRedis.existingSecret }}
- name: RIPOSTE_REDIS_URL
  valueFrom:
    secretKeyRef:
      {{- if .Values.externalRedis.existingSecret }}
      name: {{ .Values.externalRedis.existingSecret }}
      key: {{ .Values.externalRedis.existingSecretKey }}
      {{- else }}
      name: {{ printf "%s-external-redis" (include "riposte.fullname" .) }}
      key: redis-url
      {{- end }}
{{- end }}
{{- if include "riposte.redisCa" . }}
- name: RIPOSTE_REDIS_CA_FILE
  value: /etc/riposte/redis-ca/ca.pem
{{- end }}
{{- range .Values.secrets.env }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .key }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The chart's Secret first, then yours: for a key in several, the last source wins. */}}
{{- define "riposte.envFrom" -}}
- secretRef:
    name: {{ include "riposte.envSecretName" . }}
{{- range .Values.secrets.existingSecrets }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- end }}

{{/* Probes on `port` (a port name): call with (dict "ctx" $ "port" "http"). */}}
{{- define "riposte.probes" -}}
{{- $p := .ctx.Values.probes -}}
startupProbe:
  httpGet:
    path: /healthz
    port: {{ .port }}
  periodSeconds: {{ $p.startup.periodSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ .port }}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ .port }}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- end }}

{{/* Checksums of what the pods read at start, so a change rolls them. */}}
{{- define "riposte.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}

{{/* Pod-level settings shared by the API and worker pods. */}}
{{- define "riposte.podSettings" -}}
serviceAccountName: {{ include "riposte.serviceAccountName" . }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Plugins from an image of yours, copied into the extra-plugins emptyDir before start. */}}
{{- define "riposte.initContainers" -}}
{{- with .Values.plugins.extra.initContainer }}
{{- if .image }}
initContainers:
  - name: plugins
    image: {{ .image }}
    imagePullPolicy: {{ $.Values.image.pullPolicy }}
    command:
      {{- toYaml .command | nindent 6 }}
    securityContext:
      {{- toYaml $.Values.securityContext | nindent 6 }}
    resources:
      requests:
        cpu: 10m
        memory: 16Mi
      limits:
        memory: 128Mi
    volumeMounts:
      - name: extra-plugins
        mountPath: /plugins
{{- end }}
{{- end }}
{{- end }}

{{- define "riposte.volumeMounts" -}}
- name: config
  mountPath: /etc/riposte/config
  readOnly: true
- name: playbooks
  mountPath: /etc/riposte/playbooks
  readOnly: true
- name: data
  mountPath: {{ include "riposte.dataPath" . }}
- name: tmp
  mountPath: /tmp
{{- if or .Values.plugins.extra.volume .Values.plugins.extra.initContainer.image }}
- name: extra-plugins
  mountPath: /opt/riposte/extra-plugins
  readOnly: true
{{- end }}
{{- if include "riposte.redisCa" . }}
- name: redis-ca
  mountPath: /etc/riposte/redis-ca
  readOnly: true
{{- end }}
{{- end }}

{{/* Whether an external Redis's TLS authority is mounted (non-empty: yes). */}}
{{- define "riposte.redisCa" -}}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.caSecret.name }}true{{ end }}
{{- end }}

{{/* Volumes; `data` is the data volume's source: call with (dict "ctx" $ "data" (dict …)). */}}
{{- define "riposte.volumes" -}}
{{- $ctx := .ctx -}}
- name: config
  configMap:
    name: {{ include "riposte.fullname" $ctx }}-config
- name: playbooks
  {{- if $ctx.Values.playbooks.volume }}
  {{- toYaml $ctx.Values.playbooks.volume | nindent 2 }}
  {{- else }}
  configMap:
    name: {{ default (printf "%s-playbooks" (include "riposte.fullname" $ctx)) $ctx.Values.playbooks.existingConfigMap }}
  {{- end }}
- name: data
  {{- toYaml .data | nindent 2 }}
{{- /* Nothing is expected in /tmp; it exists so a library that writes a temporary file does not fail on the read-only root filesystem. */}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if $ctx.Values.plugins.extra.volume }}
- name: extra-plugins
  {{- toYaml $ctx.Values.plugins.extra.volume | nindent 2 }}
{{- else if $ctx.Values.plugins.extra.initContainer.image }}
- name: extra-plugins
  emptyDir:
    sizeLimit: 256Mi
{{- end }}
{{- if include "riposte.redisCa" $ctx }}
- name: redis-ca
  secret:
    secretName: {{ $ctx.Values.externalRedis.caSecret.name }}
    items:
      - key: {{ $ctx.Values.externalRedis.caSecret.key }}
        path: ca.pem
{{- end }}
{{- end }}

{{/* A CPU HorizontalPodAutoscaler: call with (dict "ctx" $ "component" "worker" "autoscaling" … "minReplicas" n). */}}
{{- define "riposte.hpa" -}}
{{- $ctx := .ctx }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "riposte.fullname" $ctx }}-{{ .component }}
  labels:
    {{- include "riposte.componentLabels" (dict "ctx" $ctx "component" .component) | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "riposte.fullname" $ctx }}-{{ .component }}
  minReplicas: {{ .minReplicas }}
  maxReplicas: {{ .autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .autoscaling.targetCPUUtilizationPercentage }}
{{- end }}

{{/* Egress of every Riposte pod: DNS, its Redis, HTTPS to public addresses for plugins, and networkPolicy.egress.extra. */}}
{{- define "riposte.egressRules" -}}
{{- $np := .Values.networkPolicy -}}
# DNS, wherever the cluster's resolver is (a node-local cache has a link-local address).
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- if .Values.redis.enabled }}
- to:
    - podSelector:
        matchLabels:
          app.kubernetes.io/name: redis
          app.kubernetes.io/instance: {{ .Release.Name }}
  ports:
    - port: 6379
      protocol: TCP
{{- else if include "riposte.redis" . }}
- ports:
    - port: {{ .Values.externalRedis.port }}
      protocol: TCP
  {{- with .Values.externalRedis.networkPolicyPeers }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- if $np.egress.publicHttps }}
# Plugins call SaaS APIs over HTTPS: public addresses only.
- ports:
    - port: 443
      protocol: TCP
  to:
    - ipBlock:
        cidr: 0.0.0.0/0
        except: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16]
    - ipBlock:
        cidr: "::/0"
        except: ["fc00::/7", "fe80::/10", "::1/128"]
{{- end }}
{{- with $np.egress.extra }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* One ServiceMonitor endpoint's scrape settings: call with (dict "ctx" $). */}}
{{- define "riposte.scrapeEndpoint" -}}
path: /metrics
interval: {{ .ctx.Values.metrics.serviceMonitor.interval }}
scrapeTimeout: {{ .ctx.Values.metrics.serviceMonitor.scrapeTimeout }}
authorization:
  type: Bearer
  credentials:
    name: {{ include "riposte.metricsSecretName" .ctx }}
    key: {{ if .ctx.Values.metrics.token.existingSecret }}{{ .ctx.Values.metrics.token.existingSecretKey }}{{ else }}token{{ end }}
{{- end }}

{{/* Names and labels. */}}
{{- define "coord.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "coord.fullname" -}}
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

{{- define "coord.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "coord.selectorLabels" -}}
app.kubernetes.io/name: {{ include "coord.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "coord.commonLabels" -}}
helm.sh/chart: {{ include "coord.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: coord
{{- end }}

{{- define "coord.labels" -}}
{{ include "coord.selectorLabels" . }}
{{ include "coord.commonLabels" . }}
{{- end }}

{{- define "coord.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "coord.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "coord.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "coord.devRedisName" -}}
{{- printf "%s-redis" (include "coord.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Where the chart mounts things; also written into coord.toml. */}}
{{- define "coord.configDir" -}}/etc/coord/config{{- end }}
{{- define "coord.policiesDir" -}}/etc/coord/policies{{- end }}
{{- define "coord.envoyDir" -}}/etc/coord/envoy-ratelimit{{- end }}
{{- define "coord.tlsDir" -}}/etc/coord/redis-tls{{- end }}
{{- define "coord.serverTlsDir" -}}/etc/coord/tls{{- end }}
{{- define "coord.principalsDir" -}}/etc/coord/principals{{- end }}
{{- define "coord.jwtDir" -}}/etc/coord/jwt{{- end }}

{{/* Whether the chart mounts JWT verification keys (auth.jwt). */}}
{{- define "coord.jwtEnabled" -}}
{{- $jwt := .Values.auth.jwt }}
{{- if and .Values.auth.enabled $jwt.existingSecret (or $jwt.hs256SecretKey $jwt.publicKeyKeys $jwt.jwksKey) }}true{{ end }}
{{- end }}

{{- define "coord.policyFile" -}}
{{- if .Values.rateLimit.existingConfigMap }}
{{- printf "%s/%s" (include "coord.policiesDir" .) .Values.rateLimit.existingConfigMapKey }}
{{- else }}
{{- printf "%s/policies.toml" (include "coord.configDir" .) }}
{{- end }}
{{- end }}

{{/*
Checks that JSON schema cannot express (or that must hold for any values
passed with --skip-schema-validation); `fail` stops the render.
*/}}
{{- define "coord.validate" -}}
{{- $grace := include "coord.shutdownGraceSeconds" . | int }}
{{- $preStop := int .Values.lifecycle.preStopSleepSeconds }}
{{- if le (int .Values.terminationGracePeriodSeconds) (add $grace $preStop) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed lifecycle.preStopSleepSeconds (%d) + config.server.shutdown_grace (%ds), or the kubelet kills coord before it has drained" (int .Values.terminationGracePeriodSeconds) $preStop $grace) }}
{{- end }}
{{- if and .Values.devRedis.enabled (ne .Values.redis.mode "standalone") }}
{{- fail "devRedis.enabled needs redis.mode=standalone" }}
{{- end }}
{{- if and (not .Values.devRedis.enabled) (eq .Values.redis.mode "standalone") (not .Values.redis.standalone.url) }}
{{- fail "redis.mode=standalone needs redis.standalone.url (or devRedis.enabled for a throwaway Redis)" }}
{{- end }}
{{- if and (eq .Values.redis.mode "cluster") (not .Values.redis.cluster.nodes) }}
{{- fail "redis.mode=cluster needs redis.cluster.nodes (seed URLs)" }}
{{- end }}
{{- if and .Values.redis.redlock.enabled (not .Values.redis.redlock.existingSecret) (lt (len .Values.redis.redlock.nodes) 3) }}
{{- fail "redis.redlock.enabled needs at least 3 redis.redlock.nodes (or redis.redlock.existingSecret)" }}
{{- end }}
{{- if and .Values.redis.tls.enabled (not .Values.redis.tls.existingSecret) }}
{{- fail "redis.tls.enabled needs redis.tls.existingSecret" }}
{{- end }}
{{- if .Values.redis.tls.enabled }}
{{- /* coord applies the TLS files to every connection, Redlock nodes too, and refuses redis:// URLs with them. */}}
{{- $urls := ternary (list .Values.redis.standalone.url) .Values.redis.cluster.nodes (eq .Values.redis.mode "standalone") }}
{{- if and .Values.redis.redlock.enabled (not .Values.redis.redlock.existingSecret) }}
{{- $urls = concat $urls .Values.redis.redlock.nodes }}
{{- end }}
{{- range $urls }}
{{- if not (hasPrefix "rediss://" .) }}
{{- fail (printf "redis.tls.enabled needs rediss:// URLs (Redlock nodes included), got %s" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- if ne (empty .Values.redis.tls.certKey) (empty .Values.redis.tls.keyKey) }}
{{- fail "redis.tls.certKey and redis.tls.keyKey must be set together (mutual TLS)" }}
{{- end }}
{{- $tls := .Values.tls }}
{{- if and $tls.enabled (not $tls.existingSecret) }}
{{- fail "tls.enabled needs tls.existingSecret (a Secret with the certificate and key, e.g. a cert-manager Certificate's)" }}
{{- end }}
{{- if and (ne $tls.clientAuth "none") (not $tls.enabled) }}
{{- fail (printf "tls.clientAuth=%s needs tls.enabled" $tls.clientAuth) }}
{{- end }}
{{- if and $tls.enabled (ne $tls.clientAuth "none") (not $tls.caKey) }}
{{- fail (printf "tls.clientAuth=%s needs tls.caKey (the key of the CA that signs client certificates in tls.existingSecret)" $tls.clientAuth) }}
{{- end }}
{{- if and $tls.metrics (not $tls.enabled) }}
{{- fail "tls.metrics needs tls.enabled (metrics are served with the gRPC port's certificate)" }}
{{- end }}
{{- if $tls.enabled }}
{{- $health := int .Values.ports.health }}
{{- if eq $health (int .Values.ports.grpc) }}
{{- fail (printf "ports.health (%d) must differ from ports.grpc: with tls.enabled it is a separate plaintext port for the probes" $health) }}
{{- end }}
{{- if and .Values.metrics.enabled (eq $health (int .Values.ports.metrics)) }}
{{- fail (printf "ports.health (%d) must differ from ports.metrics" $health) }}
{{- end }}
{{- $healthService := int .Values.service.healthPort }}
{{- if or (eq $healthService (int .Values.service.grpcPort)) (and .Values.metrics.enabled (eq $healthService (int .Values.service.metricsPort))) }}
{{- fail (printf "service.healthPort (%d) must differ from service.grpcPort and service.metricsPort" $healthService) }}
{{- end }}
{{- end }}
{{- $auth := .Values.auth }}
{{- if $auth.enabled }}
{{- $jwt := $auth.jwt }}
{{- $jwtKeys := or $jwt.hs256SecretKey $jwt.publicKeyKeys $jwt.jwksKey }}
{{- if and $jwtKeys (not $jwt.existingSecret) }}
{{- fail "auth.jwt.hs256SecretKey, publicKeyKeys and jwksKey are keys of auth.jwt.existingSecret, which is not set" }}
{{- end }}
{{- if and $jwt.existingSecret (not $jwtKeys) }}
{{- fail "auth.jwt.existingSecret needs at least one of auth.jwt.hs256SecretKey, publicKeyKeys, jwksKey" }}
{{- end }}
{{- if and (not $auth.existingSecret) (not (include "coord.jwtEnabled" .)) }}
{{- fail "auth.enabled needs auth.existingSecret (a principals file) or auth.jwt.existingSecret with a key: otherwise nobody could call" }}
{{- end }}
{{- $c := default (dict) .Values.config }}
{{- $authConfig := default (dict) (get $c "auth") }}
{{- if and (hasKey $authConfig "open_health") (not (get $authConfig "open_health")) (not $tls.enabled) }}
{{- fail "config.auth.open_health=false with auth.enabled and without tls.enabled would fail every probe (the kubelet's gRPC probes cannot send credentials; with tls.enabled they use the open plaintext port ports.health)" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "coord.shutdownGraceSeconds" -}}
{{- $c := default (dict) .Values.config }}
{{- $server := default (dict) (get $c "server") }}
{{- get $server "shutdown_grace" | default "10s" | trimSuffix "s" | int }}
{{- end }}

{{/*
coord's configuration as a dict (JSON): the user's `config` plus the keys the
chart owns. Rendered to TOML by coord.toml.
*/}}
{{- define "coord.configDict" -}}
{{- $c := deepCopy (default (dict) .Values.config) }}
{{- $server := default (dict) (get $c "server") }}
{{- $_ := set $server "listen" (printf "0.0.0.0:%d" (int .Values.ports.grpc)) }}
{{- if .Values.tls.enabled }}
{{- $dir := include "coord.serverTlsDir" . }}
{{- $tls := dict "cert_file" (printf "%s/%s" $dir .Values.tls.certKey) "key_file" (printf "%s/%s" $dir .Values.tls.keyKey) }}
{{- if eq .Values.tls.clientAuth "none" }}
{{- $_ := set $tls "client_auth" "none" }}
{{- else }}
{{- $_ := set $tls "client_ca_file" (printf "%s/%s" $dir .Values.tls.caKey) }}
{{- $_ := set $tls "client_auth" .Values.tls.clientAuth }}
{{- end }}
{{- $_ := set $server "tls" $tls }}
{{- $_ := set $server "health_listen" (printf "0.0.0.0:%d" (int .Values.ports.health)) }}
{{- end }}
{{- $_ := set $c "server" $server }}
{{- $metrics := default (dict) (get $c "metrics") }}
{{- $_ := set $metrics "enabled" .Values.metrics.enabled }}
{{- $_ := set $metrics "listen" (printf "0.0.0.0:%d" (int .Values.ports.metrics)) }}
{{- $_ := set $metrics "tls" (and .Values.tls.enabled .Values.tls.metrics) }}
{{- $_ := set $c "metrics" $metrics }}
{{- $redis := default (dict) (get $c "redis") }}
{{- if .Values.devRedis.enabled }}
{{- $_ := set $redis "url" (printf "redis://%s:6379" (include "coord.devRedisName" .)) }}
{{- else if eq .Values.redis.mode "standalone" }}
{{- $_ := set $redis "url" .Values.redis.standalone.url }}
{{- else }}
{{- $_ := set $redis "cluster" .Values.redis.cluster.nodes }}
{{- end }}
{{- with .Values.redis.auth.username }}
{{- $_ := set $redis "username" . }}
{{- end }}
{{- if .Values.redis.tls.enabled }}
{{- with .Values.redis.tls.caKey }}
{{- $_ := set $redis "tls_ca_file" (printf "%s/%s" (include "coord.tlsDir" $) .) }}
{{- end }}
{{- if .Values.redis.tls.certKey }}
{{- $_ := set $redis "tls_cert_file" (printf "%s/%s" (include "coord.tlsDir" .) .Values.redis.tls.certKey) }}
{{- $_ := set $redis "tls_key_file" (printf "%s/%s" (include "coord.tlsDir" .) .Values.redis.tls.keyKey) }}
{{- end }}
{{- end }}
{{- $_ := set $c "redis" $redis }}
{{- if and .Values.redis.redlock.enabled (not .Values.redis.redlock.existingSecret) }}
{{- $lock := default (dict) (get $c "lock") }}
{{- $redlock := default (dict) (get $lock "redlock") }}
{{- $_ := set $redlock "nodes" .Values.redis.redlock.nodes }}
{{- $_ := set $lock "redlock" $redlock }}
{{- $_ := set $c "lock" $lock }}
{{- end }}
{{- $ratelimit := default (dict) (get $c "ratelimit") }}
{{- $_ := set $ratelimit "policy_file" (include "coord.policyFile" .) }}
{{- if or .Values.rateLimit.envoyConfig .Values.rateLimit.envoyExistingConfigMap }}
{{- $envoy := default (dict) (get $ratelimit "envoy") }}
{{- $dir := ternary (include "coord.envoyDir" .) (include "coord.configDir" .) (not (empty .Values.rateLimit.envoyExistingConfigMap)) }}
{{- $_ := set $envoy "config_dir" $dir }}
{{- $_ := set $ratelimit "envoy" $envoy }}
{{- end }}
{{- $_ := set $c "ratelimit" $ratelimit }}
{{- $auth := default (dict) (get $c "auth") }}
{{- $_ := set $auth "enabled" .Values.auth.enabled }}
{{- if .Values.auth.enabled }}
{{- if .Values.auth.existingSecret }}
{{- $_ := set $auth "principals_file" (printf "%s/%s" (include "coord.principalsDir" .) .Values.auth.existingSecretKey) }}
{{- end }}
{{- if include "coord.jwtEnabled" . }}
{{- $v := .Values.auth.jwt }}
{{- $dir := include "coord.jwtDir" . }}
{{- $jwt := default (dict) (get $auth "jwt") }}
{{- with $v.hs256SecretKey }}
{{- $_ := set $jwt "hs256_secret_file" (printf "%s/%s" $dir .) }}
{{- end }}
{{- $files := list }}
{{- range $v.publicKeyKeys }}
{{- $files = append $files (printf "%s/%s" $dir .) }}
{{- end }}
{{- if $files }}
{{- $_ := set $jwt "public_key_files" $files }}
{{- end }}
{{- with $v.jwksKey }}
{{- $_ := set $jwt "jwks_file" (printf "%s/%s" $dir .) }}
{{- end }}
{{- with $v.issuer }}
{{- $_ := set $jwt "issuer" . }}
{{- end }}
{{- with $v.audience }}
{{- $_ := set $jwt "audience" . }}
{{- end }}
{{- $_ := set $auth "jwt" $jwt }}
{{- end }}
{{- end }}
{{- $_ := set $c "auth" $auth }}
{{- toJson $c }}
{{- end }}

{{/*
A dict as TOML: scalar and array keys first, then one [table] per nested
dict. Helm's toToml is not used because values arrive as float64 (4 would
become 4.0, which coord rightly rejects for an integer); toJson writes whole
numbers without a fraction, and JSON strings, booleans and arrays of scalars
are valid TOML.
*/}}
{{- define "coord.tomlTable" -}}
{{- $table := .table }}
{{- range $key := keys $table | sortAlpha }}
{{- $v := get $table $key }}
{{- if not (or (kindIs "map" $v) (kindIs "invalid" $v)) }}
{{ $key }} = {{ toJson $v }}
{{- end }}
{{- end }}
{{- range $key := keys $table | sortAlpha }}
{{- $v := get $table $key }}
{{- if and (kindIs "map" $v) (gt (len $v) 0) }}
{{- $name := ternary $key (printf "%s.%s" $.prefix $key) (eq $.prefix "") }}

[{{ $name }}]
{{- include "coord.tomlTable" (dict "prefix" $name "table" $v) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "coord.toml" -}}
# coord configuration, rendered by the Helm chart from its values.
{{- include "coord.tomlTable" (dict "prefix" "" "table" (include "coord.configDict" . | fromJson)) }}
{{ end }}

{{- define "coord.devRedisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "coord.name" . }}-redis
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "coord.testSelectorLabels" -}}
app.kubernetes.io/name: {{ include "coord.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

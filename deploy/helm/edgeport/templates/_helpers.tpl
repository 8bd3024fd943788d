{{/* Names, labels and shared fragments of the Edgeport chart. */}}

{{- define "edgeport.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: release-chart, or the release name alone when it already contains the chart name. */}}
{{- define "edgeport.fullname" -}}
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

{{- define "edgeport.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edgeport.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "edgeport.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "edgeport.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: edgeport
{{- end }}

{{- define "edgeport.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "edgeport.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "edgeport.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Whether any port serves TLS. */}}
{{- define "edgeport.tlsEnabled" -}}
{{- if or .Values.listener.mqtts.enabled (and .Values.listener.websocket.enabled .Values.listener.websocket.tls) }}true{{ end }}
{{- end }}

{{/* The Secret holding tls.crt and tls.key (modes CertManager and Secret). */}}
{{- define "edgeport.tlsSecretName" -}}
{{- if .Values.tls.secretName }}
{{- .Values.tls.secretName }}
{{- else }}
{{- printf "%s-tls" (include "edgeport.fullname" .) }}
{{- end }}
{{- end }}

{{/* A port's tls block of the BrokerListener. */}}
{{- define "edgeport.listenerTLS" -}}
{{- if eq .Values.tls.mode "Automatic" }}
tls:
  mode: Automatic
  certManagerCertificateSpec:
    duration: {{ .Values.tls.duration | quote }}
    renewBefore: {{ .Values.tls.renewBefore | quote }}
    {{- if or .Values.tls.dnsNames .Values.tls.ipAddresses }}
    san:
      {{- with .Values.tls.dnsNames }}
      dns: {{ toJson . }}
      {{- end }}
      {{- with .Values.tls.ipAddresses }}
      ip: {{ toJson . }}
      {{- end }}
    {{- end }}
{{- else }}
tls:
  mode: Manual
  manual:
    certFile: /etc/edgeport/tls/tls.crt
    keyFile: /etc/edgeport/tls/tls.key
{{- end }}
{{- end }}

{{/* Security settings shared by every port of the BrokerListener. */}}
{{- define "edgeport.portSecurity" -}}
address: 0.0.0.0
{{- with .Values.listener.authenticationRef }}
authenticationRef: {{ . | quote }}
{{- end }}
{{- with .Values.listener.authorizationRef }}
authorizationRef: {{ . | quote }}
{{- end }}
{{- if .Values.listener.allowAnonymous }}
allowAnonymous: true
{{- end }}
{{- with .Values.listener.maxConnections }}
maxConnections: {{ . }}
{{- end }}
{{- end }}

{{/* The Secret of the cluster's route TLS (ca.crt, tls.crt, tls.key). */}}
{{- define "edgeport.clusterTLSSecretName" -}}
{{- if and (eq .Values.cluster.routeTLS.mode "Secret") .Values.cluster.routeTLS.existingSecret }}
{{- .Values.cluster.routeTLS.existingSecret }}
{{- else }}
{{- printf "%s-cluster-tls" (include "edgeport.fullname" .) }}
{{- end }}
{{- end }}

{{/* The Secret of the cluster's route secret (key "secret"). */}}
{{- define "edgeport.clusterSecretName" -}}
{{- default (printf "%s-cluster-secret" (include "edgeport.fullname" .)) .Values.cluster.routeSecret.existingSecret }}
{{- end }}

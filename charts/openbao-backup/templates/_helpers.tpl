{{/*
Names. The documented install (`helm install openbao-backup ...`, and manifests/install.yaml)
gives the object names the README uses: openbao-backup-controller, openbao-backup-trigger...
*/}}
{{- define "openbao-backup.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "openbao-backup.fullname" -}}
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

{{/* The controller's Deployment, Service, ClusterRole... (fullname-controller). */}}
{{- define "openbao-backup.controllerName" -}}
{{- printf "%s-controller" (include "openbao-backup.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "openbao-backup.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "openbao-backup.controllerName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "openbao-backup.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "openbao-backup.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: openbao-backup
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selects the controller's pods (Deployment, PDB, Service, PodMonitor, NetworkPolicy). */}}
{{- define "openbao-backup.selectorLabels" -}}
app.kubernetes.io/name: {{ include "openbao-backup.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "openbao-backup.controllerLabels" -}}
{{ include "openbao-backup.labels" . }}
app.kubernetes.io/component: controller
{{- end }}

{{/* repository[:tag][@digest]; the tag defaults to the chart's appVersion. */}}
{{- define "openbao-backup.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The executor Jobs' image: executorImage, else the controller's own image. */}}
{{- define "openbao-backup.executorImage" -}}
{{- default (include "openbao-backup.image" .) .Values.executorImage }}
{{- end }}

{{/*
Cluster-wide mode: no watchNamespaces, or "*" among them (as --namespace '*' means all).
*/}}
{{- define "openbao-backup.clusterWide" -}}
{{- if or (not .Values.watchNamespaces) (has "*" .Values.watchNamespaces) }}true{{ end }}
{{- end }}

{{/*
What the controller does in the namespaces it watches, and nothing else: DELIBERATELY NO
Secrets (credentials are referenced from the executor Job's pod spec and read only by the
executor). One list, used by the ClusterRole (cluster-wide mode) and by the Role in each
watched namespace (single-namespace mode).
*/}}
{{- define "openbao-backup.controllerRules" -}}
- apiGroups: [backup.openbao.org]
  resources: [openbaoclusters, openbaobackups, openbaorestores]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [backup.openbao.org]
  resources: [openbaoclusters/status, openbaobackups/status, openbaorestores/status]
  verbs: [get, update, patch]
- apiGroups: [backup.openbao.org]
  resources: [openbaobackups/finalizers]
  verbs: [update]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [""]
  resources: [pods]  # read termination messages; patch only to drop our result finalizer
  verbs: [get, list, watch, patch]
- apiGroups: [""]
  resources: [configmaps]  # CA bundles for the preflight health check (public data)
  verbs: [get]
- apiGroups: [coordination.k8s.io]
  resources: [leases]  # each cluster's operation lock (the same Lease a restore or upgrade takes)
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}

{{/*
The controller's arguments (controller/settings.py): --namespace once per watched namespace
(none in cluster-wide mode), --executor-image-allowlist once per entry.
*/}}
{{- define "openbao-backup.args" -}}
- controller
- --in-cluster
- {{ printf "--bind-address=0.0.0.0:%v" .Values.controller.port | quote }}
- {{ printf "--log-format=%s" .Values.controller.logFormat | quote }}
- {{ printf "--log-level=%s" .Values.controller.logLevel | quote }}
{{- if .Values.controller.leaderElection.enabled }}
- {{ printf "--lease-name=%s" .Values.controller.leaderElection.leaseName | quote }}
{{- else }}
- --no-leader-elect
{{- end }}
- {{ printf "--executor-image=%s" (include "openbao-backup.executorImage" .) | quote }}
{{- range .Values.executorImageAllowlist }}
- {{ printf "--executor-image-allowlist=%s" . | quote }}
{{- end }}
{{- if not (include "openbao-backup.clusterWide" .) }}
{{- range .Values.watchNamespaces }}
- {{ printf "--namespace=%s" . | quote }}
{{- end }}
{{- end }}
{{- range .Values.controller.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

//go:build tools

// Package tools pins the Go module whose command hack/build-helm.sh builds: helm, which
// lints, renders and installs charts/openbao-backup. It is a module of its own, apart from
// hack/tools (the control plane): helm's k8s.io module versions differ from the control
// plane's, and one module graph would force one set on both. No Helm source is committed.
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)

//go:build tools

// Package tools pins what hack/build-prometheus-crds.sh uses to make the Prometheus Operator's
// CRDs (ServiceMonitor, PodMonitor, PrometheusRule) for tests/chart: the Operator's API types
// (its published pkg/apis/monitoring module) and controller-gen, which generates the CRDs from
// those types as the Operator's own build does. No Operator source or CRD is committed.
package tools

import (
	_ "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	_ "sigs.k8s.io/controller-tools/cmd/controller-gen"
)

//go:build tools

// Package tools pins the Go modules whose commands hack/build-control-plane.sh
// builds: kube-apiserver, kube-controller-manager, kubectl and etcd (the control
// plane), and kubelet, kube-proxy and kube-scheduler (the opt-in real node). No
// Kubernetes or etcd source is committed; `go build` fetches the published modules.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)

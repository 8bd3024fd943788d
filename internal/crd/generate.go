package crd

// The committed CRDs: deploy/crds for kubectl, and the Helm chart's crds/
// (Helm installs that directory before the chart's templates).
//go:generate go run ../../cmd/edgeport crds --out ../../deploy/crds --out ../../deploy/helm/edgeport/crds

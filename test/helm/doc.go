// Package helm tests the Helm chart in deploy/helm/edgeport with the real
// helm binary: lint, golden renders, and the rendered objects' contract.
package helm

// Package deploy holds the kustomize base and overlays that deploy
// Watershed on Kubernetes, and the tests that render them, decode every
// object strictly and check the policies the deployment promises.
package deploy

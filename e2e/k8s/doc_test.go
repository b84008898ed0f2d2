// Package k8s checks the Kubernetes manifests in deploy/k8s against the services they run: every manifest
// decodes strictly into the Kubernetes API types (KEDA's ScaledObject into a mirror of its spec), and the
// ports, probe paths, environment variables, config files, grace periods and the autoscaler's Kafka trigger
// agree with the services' etc files, config types and route tables as they are in this tree.
package k8s

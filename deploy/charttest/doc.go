// Package charttest holds the tests of the Kubernetes packaging: the Helm chart
// (deploy/helm/viworks) and the kustomize base (deploy/k8s). They render the
// chart with helm, decode every object strictly into the Kubernetes API types and
// check it against the code it deploys: the binaries' default ports and health
// endpoints, the configuration's environment variables and TOML keys
// (pkg/config), and the wiring between the objects. Run them with
// `make chart-test`, which installs helm when it is missing.
package charttest

package charttest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	chartDir = "../helm/viworks"
	// kubeVersion is passed to helm: a helm built with `go install` reports
	// Kubernetes v1.20 unless told otherwise, and the chart needs >= 1.30.
	kubeVersion = "1.33.0"
	namespace   = "fleet"
	// The ServiceMonitor is rendered only when the cluster serves this API.
	monitoringAPI = "monitoring.coreos.com/v1"
)

var allComponents = []string{"api-server", "agent-gateway", "scheduler"}

// helmPath finds helm on PATH or in $(go env GOPATH)/bin. Without it the chart
// tests skip, unless VIWORKS_REQUIRE_SERVICES=1 (CI), where they fail.
func helmPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
			p := filepath.Join(dir, "bin", "helm")
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
				return p
			}
		}
	}
	const reason = "helm is not on PATH nor in $(go env GOPATH)/bin; `make chart-test` installs it"
	if os.Getenv("VIWORKS_REQUIRE_SERVICES") == "1" {
		t.Fatal(reason + " (VIWORKS_REQUIRE_SERVICES=1: failing instead of skipping)")
	}
	t.Skip(reason)
	return ""
}

// helm runs helm with args and returns its standard output and error.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helmPath(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	err := cmd.Run()
	if err != nil {
		return out.String() + errb.String(), err
	}
	return out.String(), nil
}

// signingKeyFile writes a fresh Ed25519 PKCS#8 PEM key (as `openssl genpkey
// -algorithm ed25519` makes) and returns its path and text.
func signingKeyFile(t *testing.T) (string, string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	require.NoError(t, err)
	text := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	p := filepath.Join(t.TempDir(), "signing.key")
	require.NoError(t, os.WriteFile(p, []byte(text), 0o600))
	return p, text
}

// render runs `helm template` and decodes its output strictly.
func render(t *testing.T, name string, args ...string) *manifest {
	t.Helper()
	full := append([]string{"template", "viworks", chartDir, "--namespace", namespace, "--kube-version", kubeVersion}, args...)
	out, err := helm(t, full...)
	require.NoError(t, err, "helm %s:\n%s", strings.Join(full, " "), out)
	m := newManifest(name)
	m.add(t, name, []byte(out))
	for _, o := range m.objects {
		assert.Equal(t, namespace, o.GetNamespace(), "%s: %s %s namespace", name, m.kinds[o], o.GetName())
	}
	return m
}

func TestHelmLint(t *testing.T) {
	keyPath, _ := signingKeyFile(t)
	for _, c := range []struct {
		name string
		args []string
	}{
		{"default values", nil},
		{"minimal", []string{"-f", "testdata/minimal.yaml", "--set-file", "signing.privateKeyPEM=" + keyPath}},
		{"all features", []string{"-f", "testdata/all-features.yaml"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"lint", "--strict", "--kube-version", kubeVersion, chartDir}, c.args...)
			out, err := helm(t, args...)
			require.NoError(t, err, "helm %s:\n%s", strings.Join(args, " "), out)
			assert.Contains(t, out, "0 chart(s) failed", out)
		})
	}
}

// TestHelmTemplateRefusesMissingValues: without a database, Redis or signing
// key the chart fails with a message saying what to set (Helm cannot generate
// Ed25519 keys).
func TestHelmTemplateRefusesMissingValues(t *testing.T) {
	base := []string{"template", "viworks", chartDir, "--kube-version", kubeVersion}
	out, err := helm(t, base...)
	require.Error(t, err, "default values must not render:\n%s", out)
	assert.Contains(t, out, "database.url")

	out, err = helm(t, append(base, "-f", "testdata/minimal.yaml")...)
	require.Error(t, err, "a release without signing key must not render:\n%s", out)
	assert.Contains(t, out, "openssl genpkey -algorithm ed25519")
	assert.Contains(t, out, "signing.privateKeyPEM")

	out, err = helm(t, append(base, "-f", "testdata/minimal.yaml", "--set", "signing.privateKeyPEM=not-a-key")...)
	require.Error(t, err, out)
	assert.Contains(t, out, "PKCS#8")

	keyPath, _ := signingKeyFile(t)
	out, err = helm(t, append(base, "-f", "testdata/minimal.yaml", "--set-file", "signing.privateKeyPEM="+keyPath, "--set", "config.logging.level=loud")...)
	require.Error(t, err, "the schema must refuse an unknown log level:\n%s", out)
	assert.Contains(t, out, "level")

	out, err = helm(t, append(base, "-f", "testdata/minimal.yaml", "--set-file", "signing.privateKeyPEM="+keyPath, "--set", "config.security.jwt_secret=x")...)
	require.Error(t, err, "the schema must keep secrets out of the ConfigMap:\n%s", out)
}

func TestHelmTemplateMinimal(t *testing.T) {
	keyPath, keyPEM := signingKeyFile(t)
	for _, apis := range [][]string{nil, {"--api-versions", monitoringAPI}} {
		m := render(t, "minimal"+strings.Join(apis, " "), append([]string{"-f", "testdata/minimal.yaml", "--set-file", "signing.privateKeyPEM=" + keyPath}, apis...)...)
		checkManifest(t, m, expect{
			managedBy:    "Helm",
			helm:         true,
			dbPort:       5432,
			redisPort:    6379,
			drainSeconds: 30,
			autoscaled:   []string{"api-server", "agent-gateway"},
			pdbs:         allComponents,
			migrationJob: true,
		})
		s, ok := m.secrets["viworks"]
		require.True(t, ok, "the chart's Secret: have %v", m.kindNames())
		assert.Equal(t, keyPEM, string(s.Data["signing.key"]))
		assert.Equal(t, "keep", s.Annotations["helm.sh/resource-policy"])
		assert.Empty(t, s.Annotations["helm.sh/hook"], "the release's Secret must not be a hook (it would not be kept across upgrades)")
		hook, ok := m.secrets["viworks-migrate"]
		require.True(t, ok, "the migration hook Secret")
		assert.Equal(t, s.Data["JWT_SECRET"], hook.Data["JWT_SECRET"], "one generated JWT secret per render")
		assert.Equal(t, s.Data["AUDIT_HMAC_KEY"], hook.Data["AUDIT_HMAC_KEY"], "one generated audit key per render")
		assert.Equal(t, s.Data["DATABASE_URL"], hook.Data["DATABASE_URL"], "without database.migrationUrl the Job migrates as the services' role")
		assert.NotContains(t, hook.Data, "signing.key", "the migration needs no signing key")
		d := m.deploymentOf(t, "agent-gateway")
		assert.Equal(t, int64(45), *d.Spec.Template.Spec.TerminationGracePeriodSeconds, "gateway grace = drainSeconds + 15")
		assert.Equal(t, "ghcr.io/viworks/backend-agent:"+chartAppVersion(t), d.Spec.Template.Spec.Containers[0].Image)
	}
}

// The migration Job connects as the schema owner (database.migrationUrl), the
// services as their own role (database.url); every role gets the audit key.
func TestHelmTemplateMigrationRole(t *testing.T) {
	keyPath, _ := signingKeyFile(t)
	const owner = "postgres://viworks_owner:pw@postgres:5432/viworks"
	m := render(t, "migration-role", "-f", "testdata/minimal.yaml", "--set-file", "signing.privateKeyPEM="+keyPath,
		"--set", "database.migrationUrl="+owner, "--set", "secrets.auditKey="+strings.Repeat("k", 40),
		"--set", "secrets.previousAuditKeys[0]="+strings.Repeat("p", 40))
	s, hook := m.secrets["viworks"], m.secrets["viworks-migrate"]
	require.NotNil(t, s)
	require.NotNil(t, hook)
	assert.Equal(t, owner, string(hook.Data["DATABASE_URL"]))
	assert.NotEqual(t, owner, string(s.Data["DATABASE_URL"]), "the services do not get the owner's URL")
	assert.Equal(t, strings.Repeat("k", 40), string(s.Data["AUDIT_HMAC_KEY"]))
	assert.Equal(t, strings.Repeat("p", 40), string(s.Data["AUDIT_HMAC_PREVIOUS_KEYS"]))
	for _, c := range allComponents {
		env := m.deploymentOf(t, c).Spec.Template.Spec.Containers[0].Env
		var names []string
		for _, v := range env {
			names = append(names, v.Name)
		}
		assert.Contains(t, names, "AUDIT_HMAC_KEY", c)
		assert.Contains(t, names, "AUDIT_HMAC_PREVIOUS_KEYS", c)
	}

	out, err := helm(t, "template", "viworks", chartDir, "--kube-version", kubeVersion, "-f", "testdata/minimal.yaml", "--set-file", "signing.privateKeyPEM="+keyPath, "--set", "secrets.auditKey=short")
	require.Error(t, err)
	assert.Contains(t, out, "secrets.auditKey must be at least 32 bytes")
}

func TestHelmTemplateAllFeatures(t *testing.T) {
	e := expect{
		managedBy:      "Helm",
		helm:           true,
		extraLabels:    map[string]string{"team": "platform", "cost-center": "fleet-42"},
		existingSecret: "viworks-secrets",
		dbPort:         6432,
		redisPort:      6380,
		drainSeconds:   45,
		autoscaled:     []string{"api-server", "agent-gateway"},
		pdbs:           allComponents,
		ingress:        true,
		tlsHost:        "fleet.example.com",
		networkPolicy:  true,
		migrationJob:   true,
		previousKey:    true,
	}
	// Without the Prometheus Operator's API the ServiceMonitor is left out even
	// though it is enabled.
	m := render(t, "all-features", "-f", "testdata/all-features.yaml")
	checkManifest(t, m, e)

	e.serviceMonitor = true
	m = render(t, "all-features+monitoring", "-f", "testdata/all-features.yaml", "--api-versions", monitoringAPI)
	checkManifest(t, m, e)

	assert.Empty(t, m.secrets, "an existing Secret: the chart renders none")
	for _, c := range allComponents {
		d := m.deploymentOf(t, c)
		pod := d.Spec.Template.Spec
		assert.Equal(t, "registry.example.com/viworks/backend-agent:1.2.3", pod.Containers[0].Image, d.Name)
		assert.Equal(t, "viworks-sa", pod.ServiceAccountName, d.Name)
		require.Len(t, pod.ImagePullSecrets, 1, d.Name)
		assert.Equal(t, "registry-credentials", pod.ImagePullSecrets[0].Name, d.Name)
	}
	api := m.deploymentOf(t, "api-server")
	assert.Equal(t, "api", api.Spec.Template.Labels["tier"])
	assert.Equal(t, "platform", api.Spec.Template.Annotations["example.com/owner"])
	require.Len(t, api.Spec.Template.Spec.Tolerations, 1)
	gw := m.deploymentOf(t, "agent-gateway")
	assert.Equal(t, int64(60), *gw.Spec.Template.Spec.TerminationGracePeriodSeconds)
	assert.Equal(t, int64(10), gw.Spec.Template.Spec.Containers[0].Lifecycle.PreStop.Sleep.Seconds)
	sched := m.deploymentOf(t, "scheduler")
	assert.Equal(t, int32(3), *sched.Spec.Replicas)
	assert.Len(t, m.networkPolicies, 2, "the release's policy and the scheduler's webhook egress")
	for _, j := range m.jobs {
		assert.Equal(t, "viworks-migrator", j.Spec.Template.Spec.ServiceAccountName)
		for _, v := range j.Spec.Template.Spec.Containers[0].Env {
			if v.ValueFrom != nil && v.ValueFrom.SecretKeyRef != nil {
				assert.Equal(t, "viworks-secrets", v.ValueFrom.SecretKeyRef.Name, "the Job reads the existing Secret")
			}
		}
	}
	ing := m.ingresses["vw"]
	require.NotNil(t, ing)
	assert.Equal(t, "7200", ing.Annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"])
	assert.Equal(t, "letsencrypt", ing.Annotations["cert-manager.io/cluster-issuer"])
	require.NotNil(t, ing.Spec.IngressClassName)
	assert.Equal(t, "nginx", *ing.Spec.IngressClassName)
	assert.Equal(t, "kube-prometheus-stack", m.serviceMonitors["vw"].GetLabels()["release"])
}

// TestHelmTemplateToggles: features off render no objects for them, replicas
// come back when autoscaling is off, and a previous key (rotation) is mounted.
func TestHelmTemplateToggles(t *testing.T) {
	keyPath, _ := signingKeyFile(t)
	prevPath, prevPEM := signingKeyFile(t)
	m := render(t, "toggles", "-f", "testdata/minimal.yaml", "--set-file", "signing.privateKeyPEM="+keyPath,
		"--set", "apiServer.autoscaling.enabled=false,gateway.autoscaling.enabled=false",
		"--set", "apiServer.pdb.enabled=false,gateway.pdb.enabled=false,scheduler.pdb.enabled=false",
		"--set", "migration.enabled=false,serviceAccount.create=false,serviceAccount.name=fleet-sa",
		"--set", "serviceMonitor.enabled=true", // no monitoring API: still none
		"--set", "apiServer.replicas=4",
		"--set-file", "signing.previousKeyPEM="+prevPath)
	checkManifest(t, m, expect{
		managedBy:    "Helm",
		helm:         true,
		dbPort:       5432,
		redisPort:    6379,
		drainSeconds: 30,
		previousKey:  true,
	})
	assert.Equal(t, prevPEM, string(m.secrets["viworks"].Data["signing-previous.key"]))
	assert.Equal(t, int32(4), *m.deploymentOf(t, "api-server").Spec.Replicas)
	assert.Empty(t, m.serviceAccounts)
	assert.Equal(t, "fleet-sa", m.deploymentOf(t, "scheduler").Spec.Template.Spec.ServiceAccountName)
	for _, o := range m.objects {
		assert.Empty(t, o.GetAnnotations()["helm.sh/hook"], "%s %s: no hooks without the migration", m.kinds[o], o.GetName())
	}
}

// chartAppVersion reads appVersion from Chart.yaml.
func chartAppVersion(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	require.NoError(t, err)
	var chart struct {
		APIVersion  string `json:"apiVersion"`
		Name        string `json:"name"`
		Version     string `json:"version"`
		AppVersion  string `json:"appVersion"`
		Description string `json:"description"`
		Type        string `json:"type"`
		KubeVersion string `json:"kubeVersion"`
		Keywords    []string
		Sources     []string
	}
	require.NoError(t, decodeStrict(data, &chart))
	assert.Equal(t, "v2", chart.APIVersion)
	require.NotEmpty(t, chart.AppVersion)
	return chart.AppVersion
}

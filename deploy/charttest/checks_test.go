package charttest

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/viworks/backend-agent/pkg/argseal"
	"github.com/viworks/backend-agent/pkg/config"
)

const (
	labelName      = "app.kubernetes.io/name"
	labelInstance  = "app.kubernetes.io/instance"
	labelVersion   = "app.kubernetes.io/version"
	labelComponent = "app.kubernetes.io/component"
	labelManagedBy = "app.kubernetes.io/managed-by"
	labelPartOf    = "app.kubernetes.io/part-of"
	labelChart     = "helm.sh/chart"

	serviceUID = 65532
)

// expect describes what a manifest should contain beyond the invariants every
// manifest keeps.
type expect struct {
	managedBy      string            // app.kubernetes.io/managed-by of every object
	helm           bool              // helm.sh/chart labels and hook annotations
	extraLabels    map[string]string // commonLabels on every object
	existingSecret string            // the Secret the manifest references but does not hold ("" = none)
	dbPort         int32             // NetworkPolicy egress port of PostgreSQL
	redisPort      int32             // NetworkPolicy egress port of Redis
	drainSeconds   int               // the gateway's drain window (0: not checked)
	autoscaled     []string          // components with an HPA
	pdbs           []string          // components with a PDB
	ingress        bool
	tlsHost        string // the Ingress's TLS host ("" = no TLS)
	networkPolicy  bool
	serviceMonitor bool
	migrationJob   bool
	previousKey    bool // the scheduler gets BACKEND_PREVIOUS_KEY_PATH
}

// loaded is what one container would load as its configuration.
type loaded struct {
	cfg  config.Config
	toml string
}

// checkManifest checks every invariant of a rendered chart or of the kustomize
// base, and what e expects.
func checkManifest(t *testing.T, m *manifest, e expect) {
	t.Helper()
	checkLabels(t, m, e)
	cfgs := map[string]loaded{}
	for _, c := range components {
		cfgs[c.name] = checkDeployment(t, m, e, c.name, c.port)
		checkService(t, m, c.name, c.port)
	}
	checkGateway(t, m, e, cfgs["agent-gateway"])
	checkScheduler(t, m, e)
	checkSecretRefs(t, m, e)
	checkHPAs(t, m, e)
	checkPDBs(t, m, e)
	checkIngress(t, m, e, cfgs["agent-gateway"].cfg)
	checkNetworkPolicy(t, m, e)
	checkServiceMonitor(t, m, e)
	checkMigrationJob(t, m, e)
	for name, cm := range m.configMaps {
		for key, text := range cm.Data {
			if strings.HasSuffix(key, ".toml") {
				decodeConfigTOML(t, m.source+": ConfigMap "+name+" "+key, text)
			}
		}
	}
}

// checkLabels: every object carries the recommended labels (and the chart's,
// and the extra ones).
func checkLabels(t *testing.T, m *manifest, e expect) {
	t.Helper()
	require.NotEmpty(t, m.objects, "%s: no objects", m.source)
	for _, o := range m.objects {
		what := fmt.Sprintf("%s: %s %s", m.source, m.kinds[o], o.GetName())
		l := o.GetLabels()
		for _, k := range []string{labelName, labelInstance, labelVersion, labelManagedBy, labelPartOf} {
			assert.NotEmpty(t, l[k], "%s: label %s", what, k)
		}
		assert.Equal(t, e.managedBy, l[labelManagedBy], "%s: label %s", what, labelManagedBy)
		assert.Equal(t, "viworks", l[labelPartOf], "%s: label %s", what, labelPartOf)
		if e.helm {
			assert.Regexp(t, `^viworks-\d+\.\d+\.\d+`, l[labelChart], "%s: label %s", what, labelChart)
		}
		for k, v := range e.extraLabels {
			assert.Equal(t, v, l[k], "%s: extra label %s", what, k)
		}
	}
}

// checkDeployment checks one component's Deployment and returns the
// configuration its container would load.
func checkDeployment(t *testing.T, m *manifest, e expect, component string, port int32) loaded {
	t.Helper()
	d := m.deploymentOf(t, component)
	what := m.source + ": Deployment " + d.Name
	require.NotNil(t, d.Spec.Selector, what)
	assert.Empty(t, d.Spec.Selector.MatchExpressions, "%s: selector", what)
	assert.Equal(t, component, d.Spec.Selector.MatchLabels[labelComponent], "%s: selector names its component", what)
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	require.NoError(t, err, what)
	assert.True(t, sel.Matches(labels.Set(d.Spec.Template.Labels)), "%s: selector %v does not match the pod labels %v", what, sel, d.Spec.Template.Labels)
	for _, other := range m.deployments {
		if other != d {
			assert.False(t, sel.Matches(labels.Set(other.Spec.Template.Labels)), "%s: selector also matches %s's pods", what, other.Name)
		}
	}
	if slices.Contains(e.autoscaled, component) {
		assert.Nil(t, d.Spec.Replicas, "%s: replicas must be left to the HPA", what)
	} else {
		require.NotNil(t, d.Spec.Replicas, "%s: replicas", what)
		assert.GreaterOrEqual(t, *d.Spec.Replicas, int32(1), "%s: replicas", what)
	}

	pod := d.Spec.Template.Spec
	checkPodSecurity(t, what, pod)
	c := container(t, what, pod, component)
	assert.Equal(t, []string{"/" + component}, c.Command, "%s: command", what)
	require.Len(t, c.Ports, 1, "%s: ports", what)
	assert.Equal(t, port, c.Ports[0].ContainerPort, "%s: containerPort (the binary's default port)", what)
	assert.Equal(t, "http", c.Ports[0].Name, "%s: port name", what)

	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"livenessProbe", c.LivenessProbe, "/livez"}, {"readinessProbe", c.ReadinessProbe, "/readyz"}} {
		require.NotNil(t, p.probe, "%s: %s", what, p.name)
		require.NotNil(t, p.probe.HTTPGet, "%s: %s is not an HTTP probe", what, p.name)
		assert.Equal(t, p.path, p.probe.HTTPGet.Path, "%s: %s path", what, p.name)
		assert.Equal(t, port, resolvePort(t, what, c, p.probe.HTTPGet.Port), "%s: %s port", what, p.name)
	}
	if c.StartupProbe != nil && c.StartupProbe.HTTPGet != nil {
		assert.Equal(t, "/livez", c.StartupProbe.HTTPGet.Path, "%s: startupProbe path", what)
		assert.Equal(t, port, resolvePort(t, what, c, c.StartupProbe.HTTPGet.Port), "%s: startupProbe port", what)
	}
	assert.NotEmpty(t, c.Resources.Requests, "%s: resource requests", what)

	env := checkEnv(t, m, e, what, c)
	assert.Equal(t, "metadata.name", fieldRef(env, "VIWORKS_INSTANCE_ID"), "%s: VIWORKS_INSTANCE_ID must come from the pod name", what)
	required := []string{"DATABASE_URL", "REDIS_URL", "JWT_SECRET", "AUDIT_HMAC_KEY", "VIWORKS_INSTANCE_ID"}
	switch component {
	case "agent-gateway":
		required = append(required, "AGENT_ENROLLMENT_SECRET")
		assert.NotContains(t, env, "ARGS_ENCRYPTION_KEY", "%s: the gateway never needs the args key", what)
	case "scheduler":
		required = append(required, "BACKEND_PRIVATE_KEY_PATH", "ARGS_ENCRYPTION_KEY")
	case "api-server":
		required = append(required, "ARGS_ENCRYPTION_KEY")
	}
	for _, n := range required {
		assert.Contains(t, env, n, "%s: env", what)
	}

	l := loadContainerConfig(t, m, e, what, pod, c, d.Name+"-6f7d9c8b5-x2x9z", port)
	assert.Equal(t, port, int32(l.cfg.Server.Port), "%s: the loaded configuration listens elsewhere than the container port", what)
	return l
}

// checkPodSecurity: non-root pod with the RuntimeDefault seccomp profile; every
// container non-root, read-only root, no privilege escalation, no capabilities.
func checkPodSecurity(t *testing.T, what string, pod corev1.PodSpec) {
	t.Helper()
	psc := pod.SecurityContext
	require.NotNil(t, psc, "%s: pod securityContext", what)
	assert.Equal(t, ptr(true), psc.RunAsNonRoot, "%s: pod runAsNonRoot", what)
	assert.Equal(t, ptr(int64(serviceUID)), psc.RunAsUser, "%s: pod runAsUser", what)
	require.NotNil(t, psc.SeccompProfile, "%s: pod seccompProfile", what)
	assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, psc.SeccompProfile.Type, "%s: pod seccompProfile", what)
	if pod.AutomountServiceAccountToken != nil {
		assert.False(t, *pod.AutomountServiceAccountToken, "%s: the services need no API token", what)
	}
	all := append(slices.Clone(pod.InitContainers), pod.Containers...)
	require.NotEmpty(t, pod.Containers, what)
	for _, c := range all {
		cw := what + " container " + c.Name
		sc := c.SecurityContext
		require.NotNil(t, sc, "%s: securityContext", cw)
		assert.Equal(t, ptr(true), sc.RunAsNonRoot, "%s: runAsNonRoot", cw)
		assert.Equal(t, ptr(int64(serviceUID)), sc.RunAsUser, "%s: runAsUser", cw)
		assert.Equal(t, ptr(true), sc.ReadOnlyRootFilesystem, "%s: readOnlyRootFilesystem", cw)
		assert.Equal(t, ptr(false), sc.AllowPrivilegeEscalation, "%s: allowPrivilegeEscalation", cw)
		if assert.NotNil(t, sc.Capabilities, "%s: capabilities", cw) {
			assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop, "%s: capabilities.drop", cw)
			assert.Empty(t, sc.Capabilities.Add, "%s: capabilities.add", cw)
		}
		if assert.NotNil(t, sc.SeccompProfile, "%s: seccompProfile", cw) {
			assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, sc.SeccompProfile.Type, "%s: seccompProfile", cw)
		}
		assert.Nil(t, sc.Privileged, "%s: privileged", cw)
	}
}

func container(t *testing.T, what string, pod corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range pod.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("%s: no container %q", what, name)
	return corev1.Container{}
}

// resolvePort turns a probe's or Service's target port (number or name) into a
// container port number.
func resolvePort(t *testing.T, what string, c corev1.Container, p intstr.IntOrString) int32 {
	t.Helper()
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	t.Errorf("%s: port %q is not a port of container %s", what, p.StrVal, c.Name)
	return 0
}

// checkEnv: every variable is one pkg/config reads; returns them by name.
func checkEnv(t *testing.T, m *manifest, e expect, what string, c corev1.Container) map[string]corev1.EnvVar {
	t.Helper()
	allowed := configEnvNames(t)
	env := map[string]corev1.EnvVar{}
	for _, v := range c.Env {
		assert.True(t, allowed[v.Name], "%s: env %s is not read by pkg/config (pkg/config/load.go bindings)", what, v.Name)
		if _, dup := env[v.Name]; dup {
			t.Errorf("%s: env %s set twice", what, v.Name)
		}
		env[v.Name] = v
	}
	assert.Empty(t, c.EnvFrom, "%s: envFrom would bring unchecked names", what)
	return env
}

func fieldRef(env map[string]corev1.EnvVar, name string) string {
	v, ok := env[name]
	if !ok || v.ValueFrom == nil || v.ValueFrom.FieldRef == nil {
		return ""
	}
	return v.ValueFrom.FieldRef.FieldPath
}

// placeholderSecrets stand in for the keys of a Secret the manifest does not
// hold (an existing Secret): valid values of the documented keys.
var placeholderSecrets = map[string]string{
	"JWT_SECRET":              strings.Repeat("j", 48),
	"AUDIT_HMAC_KEY":          strings.Repeat("a", 48),
	"DATABASE_MIGRATION_URL":  "postgres://viworks_owner:pw@postgres:5432/viworks",
	"AGENT_ENROLLMENT_SECRET": strings.Repeat("e", 32),
	"ARGS_ENCRYPTION_KEY":     strings.Repeat("ab", 32),
	"DATABASE_URL":            "postgres://viworks:pw@postgres:5432/viworks",
	"REDIS_URL":               "redis://redis:6379/0",
}

// secretValue resolves a secretKeyRef against the manifest's Secrets, or the
// placeholders for the existing Secret.
func secretValue(t *testing.T, m *manifest, e expect, what string, ref *corev1.SecretKeySelector) string {
	t.Helper()
	if s, ok := m.secrets[ref.Name]; ok {
		if v, ok := s.Data[ref.Key]; ok {
			return string(v)
		}
		if v, ok := s.StringData[ref.Key]; ok {
			return v
		}
		if ref.Optional != nil && *ref.Optional {
			return ""
		}
		t.Errorf("%s: Secret %s has no key %s", what, ref.Name, ref.Key)
		return ""
	}
	if ref.Name != e.existingSecret || e.existingSecret == "" {
		t.Errorf("%s: Secret %s is neither in the manifest nor the expected existing Secret %q", what, ref.Name, e.existingSecret)
		return ""
	}
	v, ok := placeholderSecrets[ref.Key]
	if !ok && ref.Optional != nil && *ref.Optional && ref.Key == "AUDIT_HMAC_PREVIOUS_KEYS" {
		return "" // documented, optional: only during an audit key rotation
	}
	assert.True(t, ok, "%s: key %s of the existing Secret is not a documented key", what, ref.Key)
	return v
}

// loadContainerConfig finds the container's --config file in its mounted
// ConfigMap, decodes it strictly, then loads the configuration exactly as the
// binary would (file, then the container's environment) and validates it.
func loadContainerConfig(t *testing.T, m *manifest, e expect, what string, pod corev1.PodSpec, c corev1.Container, podName string, port int32) loaded {
	t.Helper()
	i := slices.Index(c.Args, "--config")
	require.True(t, i >= 0 && i+1 < len(c.Args), "%s: args %v lack --config PATH", what, c.Args)
	cfgPath := c.Args[i+1]
	text := mountedConfigMapFile(t, m, what, pod, c, cfgPath)
	decodeConfigTOML(t, what+" "+cfgPath, text)

	dir := t.TempDir()
	file := filepath.Join(dir, "viworks.toml")
	require.NoError(t, os.WriteFile(file, []byte(text), 0o600))
	vars := map[string]string{}
	for _, v := range c.Env {
		switch {
		case v.ValueFrom == nil:
			vars[v.Name] = v.Value
		case v.ValueFrom.FieldRef != nil:
			require.Equal(t, "metadata.name", v.ValueFrom.FieldRef.FieldPath, "%s: env %s", what, v.Name)
			vars[v.Name] = podName
		case v.ValueFrom.SecretKeyRef != nil:
			vars[v.Name] = secretValue(t, m, e, what, v.ValueFrom.SecretKeyRef)
		default:
			t.Errorf("%s: env %s: unsupported source", what, v.Name)
		}
	}
	base := config.Default()
	base.Server.Port = int(port)
	cfg, err := (&config.Flags{ConfigPath: file}).Load(base, func(k string) string { return vars[k] })
	require.NoError(t, err, "%s: the binary would refuse this configuration", what)
	if _, ok := vars["VIWORKS_INSTANCE_ID"]; ok {
		assert.Equal(t, podName, cfg.Server.InstanceID, "%s: instance id", what)
	}
	assert.False(t, cfg.Server.DevMode, "%s: dev mode in a manifest", what)
	return loaded{cfg: cfg, toml: text}
}

// mountedConfigMapFile returns the text of the file at path in container c: a
// subPath (or directory) mount of a ConfigMap volume of the manifest.
func mountedConfigMapFile(t *testing.T, m *manifest, what string, pod corev1.PodSpec, c corev1.Container, file string) string {
	t.Helper()
	for _, vm := range c.VolumeMounts {
		var key string
		switch {
		case vm.SubPath != "" && vm.MountPath == file:
			key = vm.SubPath
		case vm.SubPath == "" && path.Dir(file) == path.Clean(vm.MountPath):
			key = path.Base(file)
		default:
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name != vm.Name {
				continue
			}
			require.NotNil(t, v.ConfigMap, "%s: %s is not mounted from a ConfigMap", what, file)
			for _, it := range v.ConfigMap.Items {
				if it.Path == key {
					key = it.Key
				}
			}
			cm, ok := m.configMaps[v.ConfigMap.Name]
			require.True(t, ok, "%s: ConfigMap %s is not in the manifest", what, v.ConfigMap.Name)
			text, ok := cm.Data[key]
			require.True(t, ok, "%s: ConfigMap %s has no key %s", what, cm.Name, key)
			return text
		}
		t.Fatalf("%s: volume %s of mount %s is missing", what, vm.Name, vm.MountPath)
	}
	t.Fatalf("%s: nothing mounted at %s", what, file)
	return ""
}

// decodeConfigTOML decodes text into pkg/config.Config and fails on any key the
// configuration does not have.
func decodeConfigTOML(t *testing.T, what, text string) config.Config {
	t.Helper()
	var cfg config.Config
	md, err := toml.Decode(text, &cfg)
	require.NoError(t, err, "%s: TOML", what)
	var undecoded []string
	for _, k := range md.Undecoded() {
		undecoded = append(undecoded, k.String())
	}
	assert.Empty(t, undecoded, "%s: keys pkg/config does not know", what)
	for _, k := range []string{"jwt_secret", "agent_enrollment_secret"} {
		assert.False(t, md.IsDefined("security", k), "%s: secret security.%s in a ConfigMap", what, k)
	}
	return cfg
}

// checkService: the component's Service selects exactly its pods and forwards
// its port to the container's.
func checkService(t *testing.T, m *manifest, component string, port int32) {
	t.Helper()
	s := m.serviceOf(t, component)
	what := m.source + ": Service " + s.Name
	assert.Contains(t, []corev1.ServiceType{"", corev1.ServiceTypeClusterIP}, s.Spec.Type, "%s: type", what)
	require.NotEmpty(t, s.Spec.Selector, "%s: selector", what)
	sel := labels.SelectorFromSet(s.Spec.Selector)
	d := m.deploymentOf(t, component)
	assert.True(t, sel.Matches(labels.Set(d.Spec.Template.Labels)), "%s: selector %v does not match %s's pods %v", what, s.Spec.Selector, d.Name, d.Spec.Template.Labels)
	for _, other := range m.deployments {
		if other != d {
			assert.False(t, sel.Matches(labels.Set(other.Spec.Template.Labels)), "%s: selector also matches %s's pods", what, other.Name)
		}
	}
	require.Len(t, s.Spec.Ports, 1, "%s: ports", what)
	sp := s.Spec.Ports[0]
	assert.Equal(t, port, sp.Port, "%s: port", what)
	assert.Equal(t, "http", sp.Name, "%s: port name (the ServiceMonitor scrapes it)", what)
	target := sp.TargetPort
	if target.Type == intstr.Int && target.IntVal == 0 {
		target = intstr.FromInt32(sp.Port)
	}
	c := container(t, what, d.Spec.Template.Spec, component)
	assert.Equal(t, port, resolvePort(t, what, c, target), "%s: targetPort", what)
}

// checkGateway: the pod outlives the preStop sleep plus the gateway's drain
// window (its server.shutdown_timeout), which is gateway.drainSeconds.
func checkGateway(t *testing.T, m *manifest, e expect, l loaded) {
	t.Helper()
	d := m.deploymentOf(t, "agent-gateway")
	what := m.source + ": Deployment " + d.Name
	grace := d.Spec.Template.Spec.TerminationGracePeriodSeconds
	require.NotNil(t, grace, "%s: terminationGracePeriodSeconds", what)
	c := container(t, what, d.Spec.Template.Spec, "agent-gateway")
	require.NotNil(t, c.Lifecycle, "%s: lifecycle", what)
	require.NotNil(t, c.Lifecycle.PreStop, "%s: preStop", what)
	require.NotNil(t, c.Lifecycle.PreStop.Sleep, "%s: preStop sleep", what)
	sleep := c.Lifecycle.PreStop.Sleep.Seconds
	assert.Positive(t, sleep, "%s: preStop sleep", what)
	drain := int64(l.cfg.Server.ShutdownTimeout)
	if e.drainSeconds > 0 {
		assert.Equal(t, int64(e.drainSeconds), drain, "%s: server.shutdown_timeout must be gateway.drainSeconds", what)
		assert.Greater(t, *grace, int64(e.drainSeconds), "%s: terminationGracePeriodSeconds must exceed drainSeconds", what)
	}
	assert.Greater(t, *grace, sleep+drain, "%s: terminationGracePeriodSeconds %d <= preStop %d + drain %d", what, *grace, sleep, drain)
}

// checkScheduler: BACKEND_PRIVATE_KEY_PATH names a 0600 copy (made by the init
// container, in an in-memory volume) of the key in the signing Secret.
func checkScheduler(t *testing.T, m *manifest, e expect) {
	t.Helper()
	d := m.deploymentOf(t, "scheduler")
	what := m.source + ": Deployment " + d.Name
	pod := d.Spec.Template.Spec
	c := container(t, what, pod, "scheduler")
	env := map[string]string{}
	for _, v := range c.Env {
		env[v.Name] = v.Value
	}
	keyPath := env["BACKEND_PRIVATE_KEY_PATH"]
	require.NotEmpty(t, keyPath, "%s: BACKEND_PRIVATE_KEY_PATH", what)
	keyFiles := []string{path.Base(keyPath)}
	if e.previousKey {
		prev := env["BACKEND_PREVIOUS_KEY_PATH"]
		require.NotEmpty(t, prev, "%s: BACKEND_PREVIOUS_KEY_PATH", what)
		assert.Equal(t, path.Dir(keyPath), path.Dir(prev), "%s: both keys in one directory", what)
		keyFiles = append(keyFiles, path.Base(prev))
	} else {
		assert.NotContains(t, env, "BACKEND_PREVIOUS_KEY_PATH", what)
	}
	keysVol := mountAt(t, what, c, path.Dir(keyPath))
	assert.True(t, keysVol.ReadOnly, "%s: keys mounted read-only in the service", what)
	vol := volume(t, what, pod, keysVol.Name)
	require.NotNil(t, vol.EmptyDir, "%s: keys volume must be an emptyDir", what)
	assert.Equal(t, corev1.StorageMediumMemory, vol.EmptyDir.Medium, "%s: keys volume must be in memory", what)

	require.Len(t, pod.InitContainers, 1, "%s: the key installer", what)
	ic := pod.InitContainers[0]
	script := strings.Join(append(slices.Clone(ic.Command), ic.Args...), " ")
	assert.Contains(t, script, "chmod 0600", "%s: the installer must make the key 0600 (pkg/signing refuses others)", what)
	icKeys := mountAt(t, what, ic, path.Dir(keyPath))
	assert.Equal(t, keysVol.Name, icKeys.Name, "%s: installer writes the keys volume", what)
	assert.False(t, icKeys.ReadOnly, "%s: installer writes the keys volume", what)
	var secretVol *corev1.Volume
	for _, vm := range ic.VolumeMounts {
		if v := volume(t, what, pod, vm.Name); v.Secret != nil {
			secretVol = &v
			assert.Contains(t, script, vm.MountPath, "%s: installer copies from %s", what, vm.MountPath)
		}
	}
	require.NotNil(t, secretVol, "%s: installer mounts no Secret", what)
	var paths []string
	for _, it := range secretVol.Secret.Items {
		paths = append(paths, it.Path)
		if s, ok := m.secrets[secretVol.Secret.SecretName]; ok {
			assert.Contains(t, s.Data, it.Key, "%s: Secret %s has no key %s", what, s.Name, it.Key)
		} else {
			assert.Equal(t, e.existingSecret, secretVol.Secret.SecretName, "%s: signing Secret", what)
		}
	}
	assert.ElementsMatch(t, keyFiles, paths, "%s: key files of the signing Secret volume", what)
	if secretVol.Secret.DefaultMode != nil {
		assert.Zero(t, *secretVol.Secret.DefaultMode&0o007, "%s: signing Secret readable by others", what)
	}
	// The service container itself never sees the Secret volume.
	for _, vm := range c.VolumeMounts {
		assert.NotEqual(t, secretVol.Name, vm.Name, "%s: scheduler mounts the raw Secret", what)
	}
}

func mountAt(t *testing.T, what string, c corev1.Container, dir string) corev1.VolumeMount {
	t.Helper()
	for _, vm := range c.VolumeMounts {
		if path.Clean(vm.MountPath) == path.Clean(dir) {
			return vm
		}
	}
	t.Fatalf("%s: container %s mounts nothing at %s", what, c.Name, dir)
	return corev1.VolumeMount{}
}

func volume(t *testing.T, what string, pod corev1.PodSpec, name string) corev1.Volume {
	t.Helper()
	for _, v := range pod.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("%s: no volume %s", what, name)
	return corev1.Volume{}
}

// checkSecretRefs: generated Secrets hold valid secrets and a parseable key.
func checkSecretRefs(t *testing.T, m *manifest, e expect) {
	t.Helper()
	for name, s := range m.secrets {
		what := m.source + ": Secret " + name
		if v, ok := s.Data["JWT_SECRET"]; ok {
			assert.GreaterOrEqual(t, len(v), config.MinJWTSecretLen, "%s: JWT_SECRET", what)
		}
		if v, ok := s.Data["AUDIT_HMAC_KEY"]; ok {
			assert.GreaterOrEqual(t, len(v), config.MinAuditKeyLen, "%s: AUDIT_HMAC_KEY", what)
			assert.NotEqual(t, string(s.Data["JWT_SECRET"]), string(v), "%s: AUDIT_HMAC_KEY must differ from JWT_SECRET", what)
		}
		if v, ok := s.Data["AGENT_ENROLLMENT_SECRET"]; ok {
			assert.GreaterOrEqual(t, len(v), config.MinEnrollmentSecretLen, "%s: AGENT_ENROLLMENT_SECRET", what)
		}
		if v, ok := s.Data["ARGS_ENCRYPTION_KEY"]; ok {
			_, err := argseal.ParseKey(string(v))
			assert.NoError(t, err, "%s: ARGS_ENCRYPTION_KEY", what)
		}
		if v, ok := s.Data["signing.key"]; ok {
			assert.Contains(t, string(v), "-----BEGIN PRIVATE KEY-----", "%s: signing.key", what)
		}
	}
	if e.existingSecret != "" {
		assert.NotContains(t, m.secrets, e.existingSecret, "%s: the existing Secret must not be rendered", m.source)
	}
}

func checkHPAs(t *testing.T, m *manifest, e expect) {
	t.Helper()
	var got []string
	for name, h := range m.hpas {
		what := m.source + ": HPA " + name
		ref := h.Spec.ScaleTargetRef
		assert.Equal(t, "Deployment", ref.Kind, what)
		assert.Equal(t, "apps/v1", ref.APIVersion, what)
		d, ok := m.deployments[ref.Name]
		if assert.True(t, ok, "%s: scales %s, not in the manifest", what, ref.Name) {
			got = append(got, d.Labels[labelComponent])
			assert.Nil(t, d.Spec.Replicas, "%s: Deployment %s sets replicas and fights the HPA", what, d.Name)
		}
		require.NotNil(t, h.Spec.MinReplicas, what)
		assert.GreaterOrEqual(t, h.Spec.MaxReplicas, *h.Spec.MinReplicas, what)
		assert.NotEmpty(t, h.Spec.Metrics, what)
	}
	assert.ElementsMatch(t, e.autoscaled, got, "%s: HPAs", m.source)
}

func checkPDBs(t *testing.T, m *manifest, e expect) {
	t.Helper()
	var got []string
	for name, p := range m.pdbs {
		what := m.source + ": PDB " + name
		require.NotNil(t, p.Spec.Selector, what)
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		require.NoError(t, err, what)
		var matched []string
		for _, d := range m.deployments {
			if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				matched = append(matched, d.Labels[labelComponent])
			}
		}
		assert.Len(t, matched, 1, "%s: must select exactly one Deployment's pods, selects %v", what, matched)
		got = append(got, matched...)
		assert.True(t, (p.Spec.MinAvailable == nil) != (p.Spec.MaxUnavailable == nil), "%s: exactly one of minAvailable/maxUnavailable", what)
	}
	assert.ElementsMatch(t, e.pdbs, got, "%s: PDBs", m.source)
}

// checkIngress: /api and the dashboard (/ and /ui) go to the api-server,
// /ws/agent and /agent/v1 to the gateway, on their Services' ports; the WebSocket timeouts outlast heartbeats.
func checkIngress(t *testing.T, m *manifest, e expect, gw config.Config) {
	t.Helper()
	if !e.ingress {
		assert.Empty(t, m.ingresses, "%s: Ingress", m.source)
		return
	}
	require.Len(t, m.ingresses, 1, "%s: Ingress", m.source)
	for name, ing := range m.ingresses {
		what := m.source + ": Ingress " + name
		require.Len(t, ing.Spec.Rules, 1, "%s: rules", what)
		rule := ing.Spec.Rules[0]
		require.NotNil(t, rule.HTTP, what)
		routes := map[string]networkingv1.HTTPIngressPath{}
		for _, p := range rule.HTTP.Paths {
			routes[p.Path] = p
		}
		for _, want := range []struct {
			path, component string
			pathType        networkingv1.PathType
		}{
			{"/api", "api-server", networkingv1.PathTypePrefix}, {"/ws/agent", "agent-gateway", networkingv1.PathTypePrefix},
			{"/agent/v1", "agent-gateway", networkingv1.PathTypePrefix},
			// The dashboard: the page at / (only), its files under /ui/.
			{"/", "api-server", networkingv1.PathTypeExact}, {"/ui", "api-server", networkingv1.PathTypePrefix},
		} {
			p, ok := routes[want.path]
			if !assert.True(t, ok, "%s: no route for %s", what, want.path) {
				continue
			}
			require.NotNil(t, p.PathType, what)
			assert.Equal(t, want.pathType, *p.PathType, "%s: %s pathType", what, want.path)
			require.NotNil(t, p.Backend.Service, "%s: %s backend", what, want.path)
			svc := m.serviceOf(t, want.component)
			assert.Equal(t, svc.Name, p.Backend.Service.Name, "%s: %s backend service", what, want.path)
			assert.Equal(t, svc.Spec.Ports[0].Port, p.Backend.Service.Port.Number, "%s: %s backend port", what, want.path)
			assert.Equal(t, defaultPort(want.component), p.Backend.Service.Port.Number, "%s: %s backend port", what, want.path)
		}
		for _, a := range []string{"proxy-read-timeout", "proxy-send-timeout"} {
			v, err := strconv.Atoi(ing.Annotations["nginx.ingress.kubernetes.io/"+a])
			if assert.NoError(t, err, "%s: annotation %s", what, a) {
				assert.Greater(t, v, 2*gw.AgentManagement.HeartbeatInterval, "%s: %s must outlast the heartbeat interval", what, a)
			}
		}
		assert.NotEmpty(t, ing.Annotations["nginx.ingress.kubernetes.io/proxy-body-size"], "%s: proxy-body-size", what)
		if e.tlsHost != "" {
			require.Len(t, ing.Spec.TLS, 1, "%s: tls", what)
			assert.Equal(t, []string{e.tlsHost}, ing.Spec.TLS[0].Hosts, "%s: tls hosts", what)
			assert.Equal(t, e.tlsHost, rule.Host, "%s: host", what)
			assert.NotEmpty(t, ing.Spec.TLS[0].SecretName, "%s: tls secret", what)
		} else {
			assert.Empty(t, ing.Spec.TLS, "%s: tls", what)
		}
	}
}

// checkNetworkPolicy: all pods are selected; ingress only to the three ports;
// egress to DNS, PostgreSQL and Redis.
func checkNetworkPolicy(t *testing.T, m *manifest, e expect) {
	t.Helper()
	if !e.networkPolicy {
		assert.Empty(t, m.networkPolicies, "%s: NetworkPolicy", m.source)
		return
	}
	require.NotEmpty(t, m.networkPolicies, "%s: NetworkPolicy", m.source)
	ports := map[int32]bool{}
	for _, c := range components {
		ports[c.port] = true
	}
	covered := map[string]bool{}
	egress := map[string]bool{}
	for name, np := range m.networkPolicies {
		what := m.source + ": NetworkPolicy " + name
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		require.NoError(t, err, what)
		assert.False(t, sel.Empty(), "%s: selects every pod of the namespace", what)
		hasIngress := slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)
		for _, d := range m.deployments {
			if sel.Matches(labels.Set(d.Spec.Template.Labels)) && hasIngress {
				covered[d.Labels[labelComponent]] = true
			}
		}
		for _, j := range m.jobs {
			if hasIngress {
				assert.True(t, sel.Matches(labels.Set(j.Spec.Template.Labels)), "%s: does not cover Job %s", what, j.Name)
			}
		}
		for i, r := range np.Spec.Ingress {
			if i >= 3 { // extraIngress
				break
			}
			assert.NotEmpty(t, r.From, "%s: ingress rule %d open to all sources", what, i)
			assert.NotEmpty(t, r.Ports, "%s: ingress rule %d open on all ports", what, i)
			for _, p := range r.Ports {
				require.NotNil(t, p.Port, what)
				assert.True(t, ports[p.Port.IntVal], "%s: ingress to port %v is not a service port", what, p.Port)
			}
		}
		for _, r := range np.Spec.Egress {
			for _, p := range r.Ports {
				if p.Port != nil && p.Protocol != nil {
					egress[fmt.Sprintf("%s/%d", *p.Protocol, p.Port.IntVal)] = true
				}
			}
		}
	}
	for _, c := range components {
		assert.True(t, covered[c.name], "%s: no NetworkPolicy restricts ingress to %s", m.source, c.name)
	}
	for _, want := range []string{"UDP/53", "TCP/53", fmt.Sprintf("TCP/%d", e.dbPort), fmt.Sprintf("TCP/%d", e.redisPort)} {
		assert.True(t, egress[want], "%s: no egress to %s (have %v)", m.source, want, egress)
	}
}

func checkServiceMonitor(t *testing.T, m *manifest, e expect) {
	t.Helper()
	if !e.serviceMonitor {
		assert.Empty(t, m.serviceMonitors, "%s: ServiceMonitor", m.source)
		return
	}
	require.Len(t, m.serviceMonitors, 1, "%s: ServiceMonitor", m.source)
	for name, sm := range m.serviceMonitors {
		what := m.source + ": ServiceMonitor " + name
		eps, found, err := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		require.NoError(t, err, what)
		require.True(t, found, "%s: endpoints", what)
		require.Len(t, eps, 1, what)
		ep := eps[0].(map[string]any)
		assert.Equal(t, "http", ep["port"], "%s: endpoint port", what)
		assert.Equal(t, "/metrics", ep["path"], "%s: endpoint path", what)
		selRaw, found, err := unstructured.NestedMap(sm.Object, "spec", "selector")
		require.NoError(t, err, what)
		require.True(t, found, "%s: selector", what)
		js, err := json.Marshal(selRaw)
		require.NoError(t, err, what)
		var ls metav1.LabelSelector
		require.NoError(t, decodeJSONStrict(js, &ls), "%s: selector", what)
		sel, err := metav1.LabelSelectorAsSelector(&ls)
		require.NoError(t, err, what)
		for _, c := range components {
			svc := m.serviceOf(t, c.name)
			assert.True(t, sel.Matches(labels.Set(svc.Labels)), "%s: does not select Service %s", what, svc.Name)
		}
	}
}

// checkMigrationJob: `scheduler migrate` as a pre-install/pre-upgrade hook (or a
// plain Job), whose Secret and ConfigMap exist before it runs.
func checkMigrationJob(t *testing.T, m *manifest, e expect) {
	t.Helper()
	if !e.migrationJob {
		assert.Empty(t, m.jobs, "%s: Job", m.source)
		return
	}
	require.Len(t, m.jobs, 1, "%s: the migration Job", m.source)
	for name, j := range m.jobs {
		what := m.source + ": Job " + name
		pod := j.Spec.Template.Spec
		assert.Equal(t, corev1.RestartPolicyNever, pod.RestartPolicy, what)
		checkPodSecurity(t, what, pod)
		require.Len(t, pod.Containers, 1, what)
		c := pod.Containers[0]
		assert.Equal(t, []string{"/scheduler"}, c.Command, "%s: command", what)
		require.NotEmpty(t, c.Args, what)
		assert.Equal(t, "migrate", c.Args[0], "%s: args", what)
		checkEnv(t, m, e, what, c)
		loadContainerConfig(t, m, e, what, pod, c, name+"-abcde", defaultPort("scheduler"))
		if !e.helm {
			assert.Empty(t, j.Annotations["helm.sh/hook"], what)
			continue
		}
		hooks := strings.Split(j.Annotations["helm.sh/hook"], ",")
		assert.ElementsMatch(t, []string{"pre-install", "pre-upgrade"}, hooks, "%s: hooks", what)
		assert.Contains(t, j.Annotations["helm.sh/hook-delete-policy"], "before-hook-creation", what)
		jobWeight := hookWeight(t, what, j.Annotations)
		// Hooks run before the release's own objects exist (first install): what
		// the Job reads must be a hook too, created before it.
		var deps []metav1.Object
		for _, v := range c.Env {
			if v.ValueFrom != nil && v.ValueFrom.SecretKeyRef != nil {
				if s, ok := m.secrets[v.ValueFrom.SecretKeyRef.Name]; ok {
					deps = append(deps, s)
				}
			}
		}
		for _, v := range pod.Volumes {
			if v.ConfigMap != nil {
				if cm, ok := m.configMaps[v.ConfigMap.Name]; ok {
					deps = append(deps, cm)
				}
			}
		}
		for _, d := range deps {
			dw := m.kinds[d] + " " + d.GetName()
			assert.ElementsMatch(t, hooks, strings.Split(d.GetAnnotations()["helm.sh/hook"], ","), "%s: %s must be a hook of the same events", what, dw)
			assert.Less(t, hookWeight(t, dw, d.GetAnnotations()), jobWeight, "%s: %s must be created before the Job", what, dw)
		}
		for _, o := range m.objects {
			if h := o.GetAnnotations()["helm.sh/hook"]; h != "" && m.kinds[o] != "Job" {
				assert.Contains(t, deps, o, "%s: hook %s %s is not used by the Job", m.source, m.kinds[o], o.GetName())
			}
		}
	}
}

func hookWeight(t *testing.T, what string, ann map[string]string) int {
	t.Helper()
	w := ann["helm.sh/hook-weight"]
	if w == "" {
		return 0
	}
	n, err := strconv.Atoi(w)
	require.NoError(t, err, "%s: hook weight", what)
	return n
}

func ptr[T any](v T) *T { return &v }

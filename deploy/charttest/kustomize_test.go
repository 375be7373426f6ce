package charttest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// These tests read the kustomize files without running kustomize: every object
// decodes strictly and the base keeps the chart's invariants.

const (
	kustomizeBase       = "../k8s/base"
	kustomizeProduction = "../k8s/overlays/production"
)

// kustomization is the subset of kustomize's Kustomization the files use; any
// other field fails the strict decoding (and would need a look here).
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
	Replicas []struct {
		Name  string `json:"name"`
		Count int32  `json:"count"`
	} `json:"replicas,omitempty"`
	Patches []struct {
		Path string `json:"path,omitempty"`
	} `json:"patches,omitempty"`
}

func readKustomization(t *testing.T, dir string) kustomization {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	require.NoError(t, err)
	var k kustomization
	require.NoError(t, decodeStrict(data, &k), "%s/kustomization.yaml", dir)
	assert.Equal(t, "kustomize.config.k8s.io/v1beta1", k.APIVersion)
	assert.Equal(t, "Kustomization", k.Kind)
	require.NotEmpty(t, k.Resources, dir)
	return k
}

// loadBase decodes every resource of the base.
func loadBase(t *testing.T) *manifest {
	t.Helper()
	k := readKustomization(t, kustomizeBase)
	m := newManifest("deploy/k8s/base")
	m.addFiles(t, kustomizeBase, k.Resources)
	files, err := filepath.Glob(filepath.Join(kustomizeBase, "*.yaml"))
	require.NoError(t, err)
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" {
			assert.Contains(t, k.Resources, b, "%s is not listed in the base's resources", f)
		}
	}
	return m
}

var baseExpect = expect{
	managedBy:      "kustomize",
	existingSecret: "viworks",
	drainSeconds:   30,
	autoscaled:     []string{"api-server", "agent-gateway"},
	pdbs:           allComponents,
	migrationJob:   true,
}

func TestKustomizeBase(t *testing.T) {
	m := loadBase(t)
	checkManifest(t, m, baseExpect)
	assert.Empty(t, m.secrets, "the base must hold no secrets")
	for _, j := range m.jobs {
		assert.NotNil(t, j.Spec.TTLSecondsAfterFinished, "a plain Job is immutable: let it go after it finished")
	}
}

func TestKustomizeProductionOverlay(t *testing.T) {
	k := readKustomization(t, kustomizeProduction)
	base := loadBase(t)
	m := newManifest("deploy/k8s/overlays/production")
	var files []string
	for _, r := range k.Resources {
		if r == "../../base" {
			m.addFiles(t, kustomizeBase, readKustomization(t, kustomizeBase).Resources)
			continue
		}
		files = append(files, r)
	}
	m.addFiles(t, kustomizeProduction, files)
	e := baseExpect
	e.ingress, e.tlsHost = true, "fleet.example.com"
	e.networkPolicy, e.dbPort, e.redisPort = true, 5432, 6379
	checkManifest(t, m, e)

	for _, img := range k.Images {
		found := false
		for _, d := range base.deployments {
			for _, c := range d.Spec.Template.Spec.Containers {
				found = found || strings.HasPrefix(c.Image, img.Name+":")
			}
		}
		assert.True(t, found, "images: %s is not an image of the base", img.Name)
	}
	for _, r := range k.Replicas {
		d, ok := base.deployments[r.Name]
		if assert.True(t, ok, "replicas: no Deployment %s in the base", r.Name) {
			assert.NotNil(t, d.Spec.Replicas, "replicas: %s is autoscaled", r.Name)
		}
	}
	// Patches are partial objects: decode them strictly and check they name
	// objects and containers of the base, with configuration env names only.
	for _, p := range k.Patches {
		require.NotEmpty(t, p.Path, "inline patches are not checked")
		data, err := os.ReadFile(filepath.Join(kustomizeProduction, p.Path))
		require.NoError(t, err)
		var tm metav1.TypeMeta
		require.NoError(t, yaml.Unmarshal(data, &tm), p.Path)
		switch tm.APIVersion + " " + tm.Kind {
		case "apps/v1 Deployment":
			var d appsv1.Deployment
			require.NoError(t, decodeStrict(data, &d), p.Path)
			bd, ok := base.deployments[d.Name]
			require.True(t, ok, "%s: no Deployment %s in the base", p.Path, d.Name)
			for _, c := range d.Spec.Template.Spec.Containers {
				container(t, p.Path, bd.Spec.Template.Spec, c.Name)
				checkEnv(t, m, e, p.Path, c)
			}
		case "autoscaling/v2 HorizontalPodAutoscaler":
			var h autoscalingv2.HorizontalPodAutoscaler
			require.NoError(t, decodeStrict(data, &h), p.Path)
			_, ok := base.hpas[h.Name]
			require.True(t, ok, "%s: no HPA %s in the base", p.Path, h.Name)
			require.NotNil(t, h.Spec.MinReplicas, p.Path)
			assert.GreaterOrEqual(t, h.Spec.MaxReplicas, *h.Spec.MinReplicas, p.Path)
		default:
			t.Errorf("%s: patch of an unexpected kind %s %s", p.Path, tm.APIVersion, tm.Kind)
		}
	}
}

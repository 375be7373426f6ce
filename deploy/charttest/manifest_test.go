package charttest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// manifest is a set of decoded Kubernetes objects, by kind and name.
type manifest struct {
	source          string
	objects         []metav1.Object
	kinds           map[metav1.Object]string
	deployments     map[string]*appsv1.Deployment
	services        map[string]*corev1.Service
	configMaps      map[string]*corev1.ConfigMap
	secrets         map[string]*corev1.Secret
	serviceAccounts map[string]*corev1.ServiceAccount
	jobs            map[string]*batchv1.Job
	ingresses       map[string]*networkingv1.Ingress
	networkPolicies map[string]*networkingv1.NetworkPolicy
	hpas            map[string]*autoscalingv2.HorizontalPodAutoscaler
	pdbs            map[string]*policyv1.PodDisruptionBudget
	serviceMonitors map[string]*unstructured.Unstructured
}

func newManifest(source string) *manifest {
	return &manifest{
		source:          source,
		kinds:           map[metav1.Object]string{},
		deployments:     map[string]*appsv1.Deployment{},
		services:        map[string]*corev1.Service{},
		configMaps:      map[string]*corev1.ConfigMap{},
		secrets:         map[string]*corev1.Secret{},
		serviceAccounts: map[string]*corev1.ServiceAccount{},
		jobs:            map[string]*batchv1.Job{},
		ingresses:       map[string]*networkingv1.Ingress{},
		networkPolicies: map[string]*networkingv1.NetworkPolicy{},
		hpas:            map[string]*autoscalingv2.HorizontalPodAutoscaler{},
		pdbs:            map[string]*policyv1.PodDisruptionBudget{},
		serviceMonitors: map[string]*unstructured.Unstructured{},
	}
}

// docSeparator splits a YAML stream into documents.
var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeStrict converts YAML to JSON (refusing duplicate keys) and decodes it
// into v, refusing any field v's type does not have.
func decodeStrict(doc []byte, v any) error {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	return decodeJSONStrict(js, v)
}

func decodeJSONStrict(js []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data after the object")
	}
	return nil
}

// add decodes every document of a YAML stream into m. Any document that is not
// one of the expected kinds, or that has a field its type does not know, is an
// error of the test.
func (m *manifest) add(t *testing.T, name string, stream []byte) {
	t.Helper()
	for i, doc := range docSeparator.Split(string(stream), -1) {
		js, err := yaml.YAMLToJSONStrict([]byte(doc))
		if err != nil {
			t.Errorf("%s: document %d: %v", name, i, err)
			continue
		}
		if s := strings.TrimSpace(string(js)); s == "null" || s == "" {
			continue // empty or comments only
		}
		var tm metav1.TypeMeta
		if err := json.Unmarshal(js, &tm); err != nil {
			t.Errorf("%s: document %d: %v", name, i, err)
			continue
		}
		obj, err := m.decode(tm, js)
		if err != nil {
			t.Errorf("%s: document %d (%s %s): strict decoding: %v", name, i, tm.APIVersion, tm.Kind, err)
			continue
		}
		if obj == nil {
			t.Errorf("%s: document %d: unexpected object %s %s", name, i, tm.APIVersion, tm.Kind)
			continue
		}
		if obj.GetName() == "" {
			t.Errorf("%s: document %d: %s without a name", name, i, tm.Kind)
		}
		for _, o := range m.objects {
			if m.kinds[o] == tm.Kind && o.GetName() == obj.GetName() {
				t.Errorf("%s: %s %q is defined twice", name, tm.Kind, obj.GetName())
			}
		}
		m.objects = append(m.objects, obj)
		m.kinds[obj] = tm.Kind
	}
}

// decode decodes js strictly into the type of tm, and files it in m.
func (m *manifest) decode(tm metav1.TypeMeta, js []byte) (metav1.Object, error) {
	switch tm.APIVersion + " " + tm.Kind {
	case "apps/v1 Deployment":
		return into(js, m.deployments)
	case "v1 Service":
		return into(js, m.services)
	case "v1 ConfigMap":
		return into(js, m.configMaps)
	case "v1 Secret":
		return into(js, m.secrets)
	case "v1 ServiceAccount":
		return into(js, m.serviceAccounts)
	case "batch/v1 Job":
		return into(js, m.jobs)
	case "networking.k8s.io/v1 Ingress":
		return into(js, m.ingresses)
	case "networking.k8s.io/v1 NetworkPolicy":
		return into(js, m.networkPolicies)
	case "autoscaling/v2 HorizontalPodAutoscaler":
		return into(js, m.hpas)
	case "policy/v1 PodDisruptionBudget":
		return into(js, m.pdbs)
	case "monitoring.coreos.com/v1 ServiceMonitor":
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(js); err != nil {
			return nil, err
		}
		m.serviceMonitors[u.GetName()] = u
		return u, nil
	}
	return nil, nil
}

// into decodes js strictly into a new T and files it in byName.
func into[T any, PT interface {
	*T
	metav1.Object
}](js []byte, byName map[string]PT) (metav1.Object, error) {
	v := PT(new(T))
	if err := decodeJSONStrict(js, v); err != nil {
		return nil, err
	}
	byName[v.GetName()] = v
	return v, nil
}

// addFiles decodes the YAML files at paths (relative to dir) into m.
func (m *manifest) addFiles(t *testing.T, dir string, paths []string) {
	t.Helper()
	for _, p := range paths {
		data, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			t.Errorf("%s: %v", m.source, err)
			continue
		}
		m.add(t, filepath.Join(dir, p), data)
	}
}

// kindNames lists "Kind/name" of every object, sorted (for messages).
func (m *manifest) kindNames() []string {
	var out []string
	for _, o := range m.objects {
		out = append(out, m.kinds[o]+"/"+o.GetName())
	}
	sort.Strings(out)
	return out
}

// byComponent returns the Deployment whose app.kubernetes.io/component is c.
func (m *manifest) deploymentOf(t *testing.T, c string) *appsv1.Deployment {
	t.Helper()
	var found *appsv1.Deployment
	for _, d := range m.deployments {
		if d.Labels[labelComponent] == c {
			if found != nil {
				t.Errorf("%s: two Deployments for %s: %s and %s", m.source, c, found.Name, d.Name)
			}
			found = d
		}
	}
	if found == nil {
		t.Fatalf("%s: no Deployment labelled %s=%s (have %v)", m.source, labelComponent, c, m.kindNames())
	}
	return found
}

// serviceOf returns the Service whose app.kubernetes.io/component is c.
func (m *manifest) serviceOf(t *testing.T, c string) *corev1.Service {
	t.Helper()
	var found *corev1.Service
	for _, s := range m.services {
		if s.Labels[labelComponent] == c {
			if found != nil {
				t.Errorf("%s: two Services for %s: %s and %s", m.source, c, found.Name, s.Name)
			}
			found = s
		}
	}
	if found == nil {
		t.Fatalf("%s: no Service labelled %s=%s", m.source, labelComponent, c)
	}
	return found
}

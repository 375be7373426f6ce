package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agent.toml")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
	return p
}

// The shipped sample configuration loads (with its directories made real).
func TestExampleConfigLoads(t *testing.T) {
	b, err := os.ReadFile("../agent.example.toml")
	require.NoError(t, err)
	scripts := t.TempDir()
	body := strings.Replace(string(b), `"/etc/viworks-agent/scripts"`, `"`+scripts+`"`, 1)
	if os.Geteuid() != 0 {
		body = strings.Replace(body, `user = "nobody"`, `user = ""`, 1) // switching users needs root
	}
	c, err := Load(write(t, body))
	require.NoError(t, err)
	require.Equal(t, "wss://viworks.example.com/ws/agent", c.Gateway)
	require.Equal(t, "web-01", c.AgentID)
	require.Equal(t, DefaultStateDir, c.StateDir)
	require.Equal(t, []string{VerbRunScript, VerbSystemInfo}, c.Verbs)
	require.Equal(t, 5*time.Minute, c.RunScript.Timeout.Duration)
	require.Equal(t, 30*time.Second, c.CollectionInterval.Duration)
	require.Equal(t, []string{"nginx.service"}, c.Service.Units)
}

func TestLoadRefusesBadConfigs(t *testing.T) {
	scripts := t.TempDir()
	base := `gateway = "ws://127.0.0.1:8080/ws/agent"
agent_id = "a1"
state_dir = "/tmp/x"
`
	for name, tc := range map[string]struct{ body, want string }{
		"no gateway":            {`agent_id = "a1"`, "gateway is required"},
		"http gateway":          {`gateway = "http://x/ws/agent"`, "must be a ws:// or wss:// URL"},
		"bad agent id":          {base + `agent_id = "a b"`, "agent_id"},
		"relative state dir":    {strings.Replace(base, "/tmp/x", "state", 1), "state_dir \"state\" must be an absolute path"},
		"unknown verb":          {base + `verbs = ["shell"]`, `verbs: unknown verb "shell"`},
		"unknown key":           {base + `verb = ["run_script"]`, "unknown keys: verb"},
		"run_script no dir":     {base + `verbs = ["run_script"]`, "scripts_dir is required"},
		"scripts dir missing":   {base + `verbs = ["run_script"]` + "\n" + `scripts_dir = "/no/such/dir"`, "is not a directory"},
		"service without units": {base + `verbs = ["service"]`, "service.units is required"},
		"bad unit":              {base + "[service]\nunits = [\"-x\"]", "is not a unit name"},
		"hook missing":          {base + `verbs = ["create_panel_user"]`, "panel_users.create_hook is required"},
		"relative hook":         {base + "[panel_users]\ncreate_hook = \"hook\"", "must be an absolute path"},
		"no such user":          {base + "scripts_dir = \"" + scripts + "\"\n[run_script]\nuser = \"no-such-user-x\"", `no such user "no-such-user-x"`},
		"bad duration":          {base + `collection_interval = "soon"`, `invalid duration "soon"`},
		"both secrets":          {base + "enrollment_secret = \"a\"\nenrollment_secret_file = \"/b\"", "not both"},
		"half a client cert":    {base + "[tls]\ncert_file = \"/c\"", "go together"},
		"output cap too large":  {base + "[run_script]\nmax_output_bytes = 10000000", "max_output_bytes must be"},
		"not TOML":              {"gateway = ", "reading"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Load(write(t, tc.body))
			require.ErrorContains(t, err, tc.want)
		})
	}
	_, err := Load(filepath.Join(t.TempDir(), "missing.toml"))
	require.ErrorContains(t, err, "no such file")
}

func TestSecretFromFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(p, []byte("s3cret\n"), 0o600))
	s, err := Config{EnrollmentSecretFile: p}.Secret()
	require.NoError(t, err)
	require.Equal(t, "s3cret", s)
	_, err = Config{EnrollmentSecretFile: p + ".missing"}.Secret()
	require.ErrorContains(t, err, "enrollment_secret_file")
}

package charttest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// repoRoot is the repository root, seen from this module's directory.
const repoRoot = "../.."

// components are the three service binaries, each with the port it listens on by
// default: the literal each main.go passes as the `port` parameter of a
// pkg/service function (service.Main(name, PORT, ...) or
// service.LoadConfig(fs, args, PORT)). The chart and the kustomize base rely on
// these (containerPort, probes, Services, Ingress, NetworkPolicy);
// TestMainsDefaultPorts parses the mains so that a changed default fails here
// instead of in a cluster.
var components = []struct {
	name string
	port int32
}{
	{"api-server", 8080},
	{"agent-gateway", 8081},
	{"scheduler", 8082},
}

func defaultPort(component string) int32 {
	for _, c := range components {
		if c.name == component {
			return c.port
		}
	}
	return 0
}

// TestMainsDefaultPorts reads the default port out of each binary's main.go and
// checks it is the port the manifests use.
func TestMainsDefaultPorts(t *testing.T) {
	portParams := servicePortParams(t)
	require.NotEmpty(t, portParams, "pkg/service has no function with an int parameter named port")
	for _, c := range components {
		path := filepath.Join(repoRoot, c.name, "main.go")
		ports := mainPorts(t, path, portParams)
		require.NotEmpty(t, ports, "%s: found no default port (a literal passed as the port parameter of %v, or assigned to .Server.Port)", path, portParams)
		for _, p := range ports {
			assert.Equal(t, c.port, p, "%s: default port changed: update the chart (templates/_helpers.tpl viworks.components), deploy/k8s and this test", path)
		}
	}
}

// servicePortParams maps each exported function of pkg/service that has an
// int parameter named port to that parameter's index.
func servicePortParams(t *testing.T) map[string]int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot, "pkg", "service", "*.go"))
	require.NoError(t, err)
	params := map[string]int{}
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
		require.NoError(t, err)
		for _, decl := range f.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok || fd.Recv != nil || !fd.Name.IsExported() {
				continue
			}
			i := 0
			for _, field := range fd.Type.Params.List {
				typ, _ := field.Type.(*ast.Ident)
				names := field.Names
				if len(names) == 0 {
					i++
					continue
				}
				for _, n := range names {
					if n.Name == "port" && typ != nil && typ.Name == "int" {
						params[fd.Name.Name] = i
					}
					i++
				}
			}
		}
	}
	return params
}

// mainPorts returns the integer literals (or constants of one) a main.go passes
// as the port of a pkg/service function (service.F(..., PORT, ...)) or assigns
// to X.Server.Port.
func mainPorts(t *testing.T, path string, portParams map[string]int) []int32 {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	require.NoError(t, err)
	var ports []int32
	// Constants of the file with an integer literal value (const port = 8080).
	consts := map[string]*ast.BasicLit{}
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if i < len(vs.Values) {
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok {
						consts[name.Name] = lit
					}
				}
			}
		}
	}
	literal := func(e ast.Expr, what string) {
		if id, ok := e.(*ast.Ident); ok && consts[id.Name] != nil {
			e = consts[id.Name]
		}
		lit, ok := e.(*ast.BasicLit)
		if !ok || lit.Kind != token.INT {
			t.Errorf("%s: %s is not an integer literal or a constant of one", path, what)
			return
		}
		n, err := strconv.ParseInt(lit.Value, 0, 32)
		require.NoError(t, err)
		ports = append(ports, int32(n))
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CallExpr:
			sel, ok := n.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "service" {
				return true
			}
			if i, ok := portParams[sel.Sel.Name]; ok && i < len(n.Args) {
				literal(n.Args[i], "the port of service."+sel.Sel.Name)
			}
		case *ast.AssignStmt:
			for i, lhs := range n.Lhs {
				sel, ok := lhs.(*ast.SelectorExpr)
				if !ok || sel.Sel.Name != "Port" || i >= len(n.Rhs) {
					continue
				}
				if inner, ok := sel.X.(*ast.SelectorExpr); ok && inner.Sel.Name == "Server" {
					literal(n.Rhs[i], "the value assigned to .Server.Port")
				}
			}
		}
		return true
	})
	return ports
}

var (
	envNamesOnce sync.Once
	envNames     map[string]bool
	envNamesErr  error
)

// configEnvNames returns the environment variables pkg/config reads: the env
// field of every entry of `var bindings = []binding{...}` in pkg/config/load.go.
func configEnvNames(t *testing.T) map[string]bool {
	t.Helper()
	envNamesOnce.Do(func() { envNames, envNamesErr = parseBindings(filepath.Join(repoRoot, "pkg", "config", "load.go")) })
	require.NoError(t, envNamesErr)
	return envNames
}

func parseBindings(path string) (map[string]bool, error) {
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.VAR {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, id := range vs.Names {
				if id.Name != "bindings" || i >= len(vs.Values) {
					continue
				}
				list, ok := vs.Values[i].(*ast.CompositeLit)
				if !ok {
					continue
				}
				for _, elt := range list.Elts {
					if name, ok := bindingEnv(elt); ok {
						names[name] = true
					}
				}
			}
		}
	}
	return names, nil
}

// bindingEnv returns the env name of one binding literal, positional
// ({"NAME", ...}) or keyed ({env: "NAME", ...}).
func bindingEnv(elt ast.Expr) (string, bool) {
	lit, ok := elt.(*ast.CompositeLit)
	if !ok || len(lit.Elts) == 0 {
		return "", false
	}
	first := lit.Elts[0]
	for _, e := range lit.Elts {
		if kv, ok := e.(*ast.KeyValueExpr); ok {
			if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "env" {
				first = kv.Value
			}
		}
	}
	bl, ok := first.(*ast.BasicLit)
	if !ok || bl.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(bl.Value)
	return s, err == nil
}

// TestConfigEnvNames checks the parse of pkg/config's bindings found the
// configuration's variables (README, Configuration), so that the env checks below mean something.
func TestConfigEnvNames(t *testing.T) {
	names := configEnvNames(t)
	for _, n := range []string{
		"BACKEND_AGENT_BIND_ADDRESS", "BACKEND_AGENT_PORT", "DATABASE_URL", "DATABASE_MAX_CONNECTIONS",
		"REDIS_URL", "REDIS_POOL_SIZE", "REDIS_KEY_PREFIX", "JWT_SECRET", "JWT_EXPIRATION",
		"BACKEND_PRIVATE_KEY_PATH", "BACKEND_CERTIFICATE_PATH", "MAX_AGENT_CONNECTIONS",
		"AGENT_HEARTBEAT_INTERVAL", "MAX_CONCURRENT_COMMANDS", "COMMAND_TIMEOUT", "LOG_LEVEL",
		"AGENT_ENROLLMENT_SECRET", "VIWORKS_INSTANCE_ID", "AUDIT_HMAC_KEY", "AUDIT_HMAC_PREVIOUS_KEYS",
	} {
		assert.True(t, names[n], "pkg/config/load.go bindings lack %s (found %d names)", n, len(names))
	}
}

// TestDockerfile checks the image puts each binary where the manifests'
// `command` expects it (/NAME), runs as the distroless nonroot user, and labels
// its version. Docker cannot run here, so this is what checks the two agree.
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	require.NoError(t, err)
	df := string(data)
	stages := regexp.MustCompile(`(?m)^FROM\s+`).Split(df, -1)
	final := stages[len(stages)-1]
	assert.Regexp(t, `^gcr\.io/distroless/static-debian12:nonroot\b`, final, "final stage base image")
	assert.Regexp(t, `(?m)^USER\s+65532(:65532)?\s*$`, final)
	assert.Regexp(t, `(?m)^COPY\s+--from=build\s+/out/\s+/\s*$`, final, "binaries copied to /")
	assert.Contains(t, final, "org.opencontainers.image.version")
	for _, bin := range []string{"api-server", "agent-gateway", "scheduler", "agentsim"} {
		assert.Regexp(t, `(?m)^\s*cd /src/`+regexp.QuoteMeta(bin)+` && go build .*-o /out/`+regexp.QuoteMeta(bin)+` \.`, df, "build of %s", bin)
		assert.Regexp(t, `(?m)^COPY `+regexp.QuoteMeta(bin)+`/go\.mod `, df, "%s's go.mod", bin)
	}
}

// TestMainPortsParser checks the parser above on a made-up main, so that a
// parse that finds nothing or the wrong argument cannot pass unnoticed.
func TestMainPortsParser(t *testing.T) {
	src := `package main

import "github.com/viworks/backend-agent/pkg/service"

func run(args []string) int {
	base.Server.Port = 9001
	cfg, _ := service.LoadConfig(fs, args, 9002)
	_ = service.PrintErrors
	return service.Main("x", 9003, args, nil)
}
`
	path := filepath.Join(t.TempDir(), "main.go")
	require.NoError(t, os.WriteFile(path, []byte(src), 0o600))
	got := mainPorts(t, path, servicePortParams(t))
	assert.ElementsMatch(t, []int32{9001, 9002, 9003}, got)
}

package releasetest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/testenv"
)

// root is the repository.
var root = filepath.Join("..", "..")

// binaries are the release's binaries (the Makefile's RELEASE_BINARIES names).
func binaries(t *testing.T) []string {
	out := run(t, root, nil, "make", "-s", "--no-print-directory", "print-release-binaries")
	return strings.Fields(out)
}

// archiveName is the seed's name for a Go platform.
func archiveName(goos, goarch string) string {
	arch := goarch
	switch {
	case goarch == "amd64":
		arch = "x86_64"
	case goos == "linux" && goarch == "arm64":
		arch = "aarch64"
	}
	return "viworks-backend-agent-" + goos + "_" + arch
}

// unitFiles are the repository's systemd units.
func unitFiles(t *testing.T) []string {
	units, err := filepath.Glob(filepath.Join(root, "deploy", "systemd", "*.service"))
	require.NoError(t, err)
	require.NotEmpty(t, units)
	return units
}

func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %s:\n%s", name, strings.Join(args, " "), out)
	return string(out)
}

func git(t *testing.T, args ...string) string {
	return strings.TrimSpace(run(t, root, nil, "git", args...))
}

// readmeBlock is the README's shell block between the named markers.
func readmeBlock(t *testing.T, marker string) string {
	raw, err := os.ReadFile(filepath.Join(root, "README.md"))
	require.NoError(t, err)
	_, rest, ok := strings.Cut(string(raw), "<!-- "+marker+":begin -->")
	require.True(t, ok, "README lacks the %s markers", marker)
	block, _, ok := strings.Cut(rest, "<!-- "+marker+":end -->")
	require.True(t, ok)
	block = strings.TrimSpace(block)
	block = strings.TrimPrefix(block, "```bash")
	return strings.TrimSuffix(block, "```")
}

type entry struct {
	mode  int64
	uid   int
	gid   int
	mtime time.Time
}

func readArchive(t *testing.T, path string) map[string]entry {
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	zr, err := gzip.NewReader(f)
	require.NoError(t, err)
	tr := tar.NewReader(zr)
	out := map[string]entry{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		out[strings.TrimSuffix(h.Name, "/")] = entry{mode: h.Mode & 0o7777, uid: h.Uid, gid: h.Gid, mtime: h.ModTime}
	}
}

func perm(t *testing.T, path string) os.FileMode {
	info, err := os.Stat(path)
	require.NoError(t, err)
	return info.Mode().Perm()
}

// envFile parses KEY=VALUE lines (what systemd's EnvironmentFile= reads here).
func envFile(t *testing.T, path string) map[string]string {
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	out := map[string]string{}
	for _, l := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			out[k] = v
		}
	}
	return out
}

// unitValue is KEY's value in a unit file's [Service] section.
func unitValue(t *testing.T, path, key string) string {
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			return v
		}
	}
	t.Fatalf("%s has no %s=", path, key)
	return ""
}

func TestRelease(t *testing.T) {
	platform := os.Getenv("RELEASE_TEST_PLATFORM")
	if platform == "" {
		platform = runtime.GOOS + "/" + runtime.GOARCH
	}
	goos, goarch, _ := strings.Cut(platform, "/")
	name := archiveName(goos, goarch)
	work, err := os.MkdirTemp("", "vwrel")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(work) })

	// Two runs of make release on this commit.
	dists := []string{filepath.Join(work, "dist1"), filepath.Join(work, "dist2")}
	for _, d := range dists {
		run(t, root, nil, "make", "release", "PLATFORMS="+platform, "DIST="+d)
	}
	dist := dists[0]
	archive := filepath.Join(dist, name+".tar.gz")

	t.Run("SHA256SUMS verifies", func(t *testing.T) {
		out := run(t, dist, nil, "sha256sum", "-c", "SHA256SUMS")
		require.Contains(t, out, name+".tar.gz: OK")
	})

	t.Run("two runs are byte-identical", func(t *testing.T) {
		for _, f := range []string{name + ".tar.gz", "SHA256SUMS"} {
			a, err := os.ReadFile(filepath.Join(dists[0], f))
			require.NoError(t, err)
			b, err := os.ReadFile(filepath.Join(dists[1], f))
			require.NoError(t, err)
			require.True(t, bytes.Equal(a, b), "%s differs between two runs", f)
		}
	})

	bins := binaries(t)
	t.Run("archive layout, owners, modes and times", func(t *testing.T) {
		epoch, err := strconv.ParseInt(git(t, "log", "-1", "--format=%ct"), 10, 64)
		require.NoError(t, err)
		entries := readArchive(t, archive)
		want := map[string]int64{name: 0o755, name + "/bin": 0o755, name + "/systemd": 0o755,
			name + "/install.sh": 0o755, name + "/env.example": 0o644, name + "/config.example.toml": 0o644,
			name + "/README.md": 0o644, name + "/LICENSE": 0o644}
		for _, b := range bins {
			want[name+"/bin/"+b] = 0o755
		}
		for _, u := range unitFiles(t) {
			want[name+"/systemd/"+filepath.Base(u)] = 0o644
		}
		got := map[string]int64{}
		for n, e := range entries {
			got[n] = e.mode
			require.Equal(t, 0, e.uid, n)
			require.Equal(t, 0, e.gid, n)
			require.Equal(t, epoch, e.mtime.Unix(), n)
		}
		require.Equal(t, want, got)
	})

	if goos != runtime.GOOS || goarch != runtime.GOARCH {
		t.Logf("platform %s is not this machine's: the installed binaries are not run", platform)
		return
	}

	// The README's VM install lines, in a copy of the dist directory; sudo runs
	// the command as is (the test runs as root) and DESTDIR is a temporary root.
	require.Equal(t, 0, os.Geteuid(), "the install test chroots into the installed tree: run it as root")
	destdir := filepath.Join(work, "root")
	install := readmeBlock(t, "vm-install")
	require.Contains(t, install, name+".tar.gz", "the README names this platform's archive")
	out := run(t, dist, []string{"DESTDIR=" + destdir}, "sh", "-ec", "sudo() { \"$@\"; }\n"+install)
	require.Contains(t, out, "installed /etc/viworks/viworks.env from .env")
	require.Contains(t, out, "DESTDIR set")
	unpacked := filepath.Join(dist, name)

	t.Run("every binary answers --version with the stamp", func(t *testing.T) {
		stamp := fmt.Sprintf(" %s (commit %s, built %s)\n",
			git(t, "describe", "--tags", "--always", "--dirty"), git(t, "rev-parse", "HEAD"), git(t, "log", "-1", "--format=%cI"))
		for _, b := range bins {
			require.Equal(t, b+stamp, run(t, unpacked, nil, filepath.Join(destdir, "usr/local/bin", b), "--version"))
		}
	})

	t.Run("install.sh creates the tree with the right modes", func(t *testing.T) {
		want := map[string]os.FileMode{
			"etc/viworks": 0o750, "etc/viworks/viworks.toml": 0o640, "etc/viworks/viworks.env": 0o600,
			"etc/viworks/backend.key": 0o600, "var/lib/viworks": 0o750, "usr/local/bin": 0o755,
		}
		for _, b := range bins {
			want["usr/local/bin/"+b] = 0o755
		}
		for _, u := range unitFiles(t) {
			want["etc/systemd/system/"+filepath.Base(u)] = 0o644
		}
		for p, m := range want {
			require.Equal(t, m, perm(t, filepath.Join(destdir, p)), p)
		}
		example, err := os.ReadFile(filepath.Join(root, "config.example.toml"))
		require.NoError(t, err)
		conf, err := os.ReadFile(filepath.Join(destdir, "etc/viworks/viworks.toml"))
		require.NoError(t, err)
		require.Equal(t, string(example), string(conf))
		env := envFile(t, filepath.Join(destdir, "etc/viworks/viworks.env"))
		for k, n := range map[string]int{"JWT_SECRET": 64, "AUDIT_HMAC_KEY": 64, "ARGS_ENCRYPTION_KEY": 64, "AGENT_ENROLLMENT_SECRET": 48} {
			require.Regexp(t, regexp.MustCompile(fmt.Sprintf("^[0-9a-f]{%d}$", n)), env[k], k)
		}
		require.NotEqual(t, env["JWT_SECRET"], env["AUDIT_HMAC_KEY"])
		key, err := os.ReadFile(filepath.Join(destdir, "etc/viworks/backend.key"))
		require.NoError(t, err)
		require.Regexp(t, `^-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI[A-Za-z0-9+/]{43}\n-----END PRIVATE KEY-----\n$`, string(key))
	})

	t.Run("a second run is an upgrade that keeps every secret", func(t *testing.T) {
		secrets := []string{"etc/viworks/viworks.env", "etc/viworks/backend.key", "etc/viworks/viworks.toml"}
		before := map[string][]byte{}
		for _, s := range secrets {
			b, err := os.ReadFile(filepath.Join(destdir, s))
			require.NoError(t, err)
			before[s] = b
		}
		// The operator edited the installed config, and .env now differs.
		conf := filepath.Join(destdir, "etc/viworks/viworks.toml")
		before["etc/viworks/viworks.toml"] = append(before["etc/viworks/viworks.toml"], "# edited\n"...)
		require.NoError(t, os.WriteFile(conf, before["etc/viworks/viworks.toml"], 0o640))
		require.NoError(t, os.WriteFile(filepath.Join(unpacked, ".env"), []byte("JWT_SECRET=replaced-by-a-second-run-never-0123456789\n"), 0o600))
		out := run(t, unpacked, []string{"DESTDIR=" + destdir}, "./install.sh", "--no-start")
		require.Contains(t, out, ".env differs and was NOT installed")
		require.NotContains(t, out, "generated")
		for _, s := range secrets {
			b, err := os.ReadFile(filepath.Join(destdir, s))
			require.NoError(t, err)
			require.Equal(t, string(before[s]), string(b), s)
		}
	})

	t.Run("a first install takes .env and fills only the empty secrets", func(t *testing.T) {
		other := filepath.Join(work, "root-env")
		preset := "preset-jwt-secret-of-the-operator-0123456789abcdef"
		require.NoError(t, os.WriteFile(filepath.Join(unpacked, ".env"), []byte("JWT_SECRET="+preset+"\nAUDIT_HMAC_KEY=\nLOG_LEVEL=debug\n"), 0o600))
		out := run(t, unpacked, []string{"DESTDIR=" + other}, "./install.sh", "--layout", "split", "--no-start")
		require.Contains(t, out, "--no-start: not enabling or starting viworks-scheduler.service viworks-api-server.service viworks-agent-gateway.service")
		env := envFile(t, filepath.Join(other, "etc/viworks/viworks.env"))
		require.Equal(t, preset, env["JWT_SECRET"])
		require.Equal(t, "debug", env["LOG_LEVEL"])
		require.Len(t, env["AUDIT_HMAC_KEY"], 64)
		require.Len(t, env["AGENT_ENROLLMENT_SECRET"], 48)
		require.NoError(t, os.Remove(filepath.Join(unpacked, ".env")))

		out = run(t, unpacked, []string{"DESTDIR=" + other}, "./install.sh", "--uninstall")
		require.Contains(t, out, "kept /etc/viworks")
		left, err := os.ReadDir(filepath.Join(other, "usr/local/bin"))
		require.NoError(t, err)
		require.Empty(t, left)
		left, err = os.ReadDir(filepath.Join(other, "etc/systemd/system"))
		require.NoError(t, err)
		require.Empty(t, left)
		require.FileExists(t, filepath.Join(other, "etc/viworks/backend.key"))
	})

	t.Run("bad arguments are refused with a clear line", func(t *testing.T) {
		for _, args := range [][]string{{"--layout", "cluster"}, {"--bogus"}, {"--layout"}} {
			cmd := exec.Command("./install.sh", args...)
			cmd.Dir = unpacked
			cmd.Env = append(os.Environ(), "DESTDIR="+filepath.Join(work, "never"))
			out, err := cmd.CombinedOutput()
			require.Error(t, err, "%v", args)
			require.Contains(t, string(out), "install.sh: ", "%v", args)
			require.NoDirExists(t, filepath.Join(work, "never"))
		}
	})

	t.Run("systemd-analyze verify accepts every unit", func(t *testing.T) {
		if _, err := exec.LookPath("systemd-analyze"); err != nil {
			require.Empty(t, os.Getenv("VIWORKS_REQUIRE_SERVICES"), "systemd-analyze is missing (apt-get install systemd)")
			t.Skip("systemd-analyze is missing (apt-get install systemd)")
		}
		// The units' dependencies (multi-user.target, sysinit.target …) come
		// with systemd, which a DESTDIR tree lacks: borrow this machine's.
		require.NoError(t, os.MkdirAll(filepath.Join(destdir, "usr/lib/systemd"), 0o755))
		run(t, "", nil, "cp", "-a", "/usr/lib/systemd/system", filepath.Join(destdir, "usr/lib/systemd/"))
		units, err := filepath.Glob(filepath.Join(destdir, "etc/systemd/system", "*.service"))
		require.NoError(t, err)
		require.Len(t, units, len(unitFiles(t)))
		for _, u := range units {
			out := run(t, destdir, nil, "systemd-analyze", "verify", "--root="+destdir, "/etc/systemd/system/"+filepath.Base(u))
			require.Empty(t, strings.TrimSpace(out), "%s: %s", u, out)
		}
	})

	t.Run("the installed all-in-one starts from its unit and answers health", func(t *testing.T) {
		startInstalled(t, destdir)
		// Embedded storage, in the data directory the unit may write.
		require.FileExists(t, filepath.Join(destdir, "var/lib/viworks", "viworks.db"))
	})

	t.Run("on the Postgres and Redis of the env file: the all-in-one, then the split services", func(t *testing.T) {
		dbURL := testenv.Postgres(t)
		redisURL, prefix := testenv.Redis(t)
		other := filepath.Join(work, "root-services")
		dotenv := fmt.Sprintf("DATABASE_URL=%s\nREDIS_URL=%s\nREDIS_KEY_PREFIX=%s\n", dbURL, redisURL, prefix)
		require.NoError(t, os.WriteFile(filepath.Join(unpacked, ".env"), []byte(dotenv), 0o600))
		t.Cleanup(func() { _ = os.Remove(filepath.Join(unpacked, ".env")) })
		run(t, unpacked, []string{"DESTDIR=" + other}, "./install.sh", "--no-start")

		startInstalled(t, other)
		require.NoFileExists(t, filepath.Join(other, "var/lib/viworks", "viworks.db"), "the env file's Postgres, not SQLite")

		// A fresh database for the split services: the scheduler's
		// ExecStartPre migrates it, then the three start.
		dbURL = testenv.Postgres(t)
		envPath := filepath.Join(other, "etc/viworks/viworks.env")
		raw, err := os.ReadFile(envPath)
		require.NoError(t, err)
		raw = regexp.MustCompile(`(?m)^DATABASE_URL=.*$`).ReplaceAll(raw, []byte("DATABASE_URL="+dbURL))
		require.NoError(t, os.WriteFile(envPath, raw, 0o600))
		ports := map[string]int{}
		for _, u := range []string{"viworks-scheduler.service", "viworks-api-server.service", "viworks-agent-gateway.service"} {
			ports[u] = freePort(t)
		}
		argv, env := unitCommand(t, other, "viworks-scheduler.service", "ExecStartPre", ports["viworks-scheduler.service"])
		cmd := exec.Command("chroot", append([]string{other}, argv...)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Contains(t, string(out), "schema at version")
		var running []*started
		for _, u := range []string{"viworks-scheduler.service", "viworks-api-server.service", "viworks-agent-gateway.service"} {
			running = append(running, startUnit(t, other, u, ports[u]))
		}
		troubleshoot(t, ports["viworks-api-server.service"])
		for _, s := range slices.Backward(running) {
			s.stop(t)
		}
	})
}

// started is a unit's ExecStart running in a chroot of the installed tree.
type started struct {
	cmd            *exec.Cmd
	exited         chan error
	sock           *net.UnixConn
	stdout, stderr bytes.Buffer
}

// notified is the next message the service sent to its notify socket.
func (s *started) notified(t *testing.T) string {
	buf := make([]byte, 256)
	require.NoError(t, s.sock.SetReadDeadline(time.Now().Add(60*time.Second)))
	n, err := s.sock.Read(buf)
	require.NoError(t, err, "stderr: %s\nstdout: %s", &s.stderr, &s.stdout)
	return string(buf[:n])
}

// stop sends SIGTERM, as systemd stops a unit, and waits for a clean exit
// after STOPPING=1.
func (s *started) stop(t *testing.T) {
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, "STOPPING=1", s.notified(t))
	select {
	case err := <-s.exited:
		require.NoError(t, err, "stderr: %s", &s.stderr)
	case <-time.After(60 * time.Second):
		t.Fatal("the service did not stop within 60 s of SIGTERM")
	}
}

// freePort is a loopback port nothing listens on.
func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

// unitCommand is a unit's command line (ExecStart or ExecStartPre) and its
// environment: the unit's EnvironmentFile as systemd reads it, a loopback
// listener on port (the unit's --port, if any, becomes port) and a notify
// socket path inside the tree.
func unitCommand(t *testing.T, destdir, unit, key string, port int) (argv, env []string) {
	path := filepath.Join(destdir, "etc/systemd/system", unit)
	require.Equal(t, "notify", unitValue(t, path, "Type"))
	argv = strings.Fields(unitValue(t, path, key))
	if i := slices.Index(argv, "--port"); i >= 0 {
		argv[i+1] = strconv.Itoa(port)
	}
	for k, v := range envFile(t, filepath.Join(destdir, unitValue(t, path, "EnvironmentFile"))) {
		env = append(env, k+"="+v)
	}
	env = append(env, "BACKEND_AGENT_PORT="+strconv.Itoa(port), "BACKEND_AGENT_BIND_ADDRESS=127.0.0.1")
	return argv, env
}

// startUnit runs unit's ExecStart in a chroot of destdir as systemd would and
// waits for its READY=1.
func startUnit(t *testing.T, destdir, unit string, port int) *started {
	argv, env := unitCommand(t, destdir, unit, "ExecStart", port)
	require.NoError(t, os.MkdirAll(filepath.Join(destdir, "run"), 0o755))
	sockName := "/run/" + strings.TrimSuffix(unit, ".service") + ".notify"
	_ = os.Remove(filepath.Join(destdir, sockName))
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(destdir, sockName), Net: "unixgram"})
	require.NoError(t, err)
	s := &started{sock: sock, exited: make(chan error, 1)}
	s.cmd = exec.Command("chroot", append([]string{destdir}, argv...)...)
	s.cmd.Env = append(env, "NOTIFY_SOCKET="+sockName)
	s.cmd.Stdout, s.cmd.Stderr = &s.stdout, &s.stderr
	require.NoError(t, s.cmd.Start())
	go func() { s.exited <- s.cmd.Wait() }()
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
		_ = sock.Close()
	})
	require.Equal(t, "READY=1", s.notified(t))
	return s
}

// troubleshoot runs the README's troubleshooting curls against port; each
// must answer 200.
func troubleshoot(t *testing.T, port int) {
	curls := strings.ReplaceAll(readmeBlock(t, "vm-troubleshooting"), "localhost:8080", "127.0.0.1:"+strconv.Itoa(port))
	lines := slices.DeleteFunc(strings.Split(strings.TrimSpace(curls), "\n"), func(s string) bool { return strings.TrimSpace(s) == "" })
	require.Len(t, lines, 3)
	for _, l := range lines {
		out := run(t, "", nil, "sh", "-ec", l+` -o /dev/stderr -w '%{http_code}'`)
		require.True(t, strings.HasSuffix(out, "200"), "%s: %s", l, out)
	}
}

// jsonLines counts the JSON log records in out (what journald would store).
func jsonLines(out ...*bytes.Buffer) int {
	var n int
	for _, s := range out {
		sc := bufio.NewScanner(bytes.NewReader(s.Bytes()))
		for sc.Scan() {
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] != nil {
				n++
			}
		}
	}
	return n
}

// startInstalled runs viworks-backend-agent.service in destdir, the README's
// troubleshooting curls against it, and stops it.
func startInstalled(t *testing.T, destdir string) {
	port := freePort(t)
	s := startUnit(t, destdir, "viworks-backend-agent.service", port)
	troubleshoot(t, port)
	s.stop(t)
	require.Positive(t, jsonLines(&s.stdout, &s.stderr), "no JSON log lines:\n%s\n%s", &s.stdout, &s.stderr)
}

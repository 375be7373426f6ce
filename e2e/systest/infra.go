package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// postgres is a private PostgreSQL instance on a free port: the
// scenarios stop and restart it, so it is never the shared one.
type postgres struct {
	bin     string // directory of initdb and pg_ctl
	dataDir string
	sockDir string
	logPath string
	port    int
	asUser  string // run the tools as this user (initdb refuses root); "" for ourselves
}

// findPostgresBin returns the newest /usr/lib/postgresql/N/bin holding pg_ctl,
// or the directory of pg_ctl on PATH.
func findPostgresBin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("pg_ctl not found (apt-get install -y postgresql)")
}

func versionOf(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

func newPostgres(work string, port int) (*postgres, error) {
	bin, err := findPostgresBin()
	if err != nil {
		return nil, err
	}
	p := &postgres{
		bin: bin, dataDir: filepath.Join(work, "pgdata"), sockDir: filepath.Join(work, "pgsock"),
		logPath: filepath.Join(work, "postgres.log"), port: port,
	}
	for _, d := range []string{p.dataDir, p.sockDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("creating %s: %w", d, err)
		}
	}
	if os.Geteuid() == 0 {
		// initdb refuses root: the cluster belongs to the postgres user.
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("looking up the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, d := range []string{p.dataDir, p.sockDir} {
			if err := os.Chown(d, uid, gid); err != nil {
				return nil, fmt.Errorf("chown %s: %w", d, err)
			}
		}
		f, err := os.Create(p.logPath)
		if err != nil {
			return nil, err
		}
		_ = f.Close()
		if err := os.Chown(p.logPath, uid, gid); err != nil {
			return nil, err
		}
		p.asUser = "postgres"
	}
	out, err := p.tool("initdb", "-D", p.dataDir, "-A", "trust", "-U", "postgres", "--no-sync").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	return p, nil
}

func (p *postgres) tool(name string, args ...string) *exec.Cmd {
	path := filepath.Join(p.bin, name)
	if p.asUser != "" {
		return exec.Command("runuser", append([]string{"-u", p.asUser, "--", path}, args...)...)
	}
	return exec.Command(path, args...)
}

// URL is the connection URL of database db.
func (p *postgres) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.port, db)
}

func (p *postgres) start() error {
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300", p.port, p.sockDir)
	out, err := p.tool("pg_ctl", "-D", p.dataDir, "-o", opts, "-l", p.logPath, "-w", "-t", "60", "start").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl start: %v\n%s", err, out)
	}
	return nil
}

// stop shuts the server down in fast mode: sessions are cut, as in a failover.
func (p *postgres) stop() error {
	out, err := p.tool("pg_ctl", "-D", p.dataDir, "-m", "fast", "-w", "-t", "60", "stop").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %v\n%s", err, out)
	}
	return nil
}

// createDB creates database name.
func (p *postgres) createDB(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		return fmt.Errorf("connecting to the private postgres: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("creating database: %w", err)
	}
	return nil
}

// redisServer is a private redis-server on a free port, restarted empty by a scenario.
type redisServer struct {
	port    int
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
}

func (r *redisServer) URL() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.port) }

func (r *redisServer) start(ctx context.Context) error {
	f, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--maxclients", "2000")
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return fmt.Errorf("starting redis-server: %w", err)
	}
	r.cmd, r.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); _ = f.Close(); close(r.done) }()
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", r.port), MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c.Ping(ctx).Err() == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("redis-server did not answer PING within 10s")
}

// kill stops the server at once (SIGKILL): everything in it is lost.
func (r *redisServer) kill() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	<-r.done
	r.cmd = nil
}

// nginx is the ingress: a real nginx, not daemonized, with a generated
// configuration like ingress-nginx's for the chart's Ingress.
type nginx struct {
	dir  string
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

// nginxConfig renders the configuration: the REST API on two api-servers, the
// agents' WebSocket and enrollment on three gateways.
func nginxConfig(dir string, port int, apiPorts, gwPorts []int, proxyTimeout time.Duration) string {
	servers := func(ports []int) string {
		var b strings.Builder
		for _, p := range ports {
			// As ingress-nginx (upstream-max-fails 0): a refused connection sends
			// the request to the next server without marking this one down.
			// (With max_fails, a server coming back admits one WebSocket per
			// fail_timeout: a long-lived connection only clears the failure
			// count when it closes.)
			fmt.Fprintf(&b, "    server 127.0.0.1:%d max_fails=0;\n", p)
		}
		return b.String()
	}
	secs := int(proxyTimeout / time.Second)
	return fmt.Sprintf(`# Generated by e2e/systest: ingress-nginx's behaviour for the chart's Ingress.
daemon off;
worker_processes 1;
worker_rlimit_nofile 16384;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 8192; }
http {
  client_body_temp_path %[1]s/tmp/body;
  proxy_temp_path %[1]s/tmp/proxy;
  fastcgi_temp_path %[1]s/tmp/fastcgi;
  uwsgi_temp_path %[1]s/tmp/uwsgi;
  scgi_temp_path %[1]s/tmp/scgi;
  log_format systest '$remote_addr "$request" $status $upstream_addr $request_time';
  access_log %[1]s/access.log systest;
  client_max_body_size 1m;

  # As ingress-nginx: Connection "upgrade" only when the client asks for it.
  map $http_upgrade $connection_upgrade {
    default upgrade;
    ''      close;
  }
  upstream api {
%[3]s    keepalive 32;
  }
  upstream gateways {
%[4]s  }
  server {
    listen 127.0.0.1:%[2]d;
    proxy_http_version 1.1;
    proxy_set_header Host $host;
    proxy_set_header X-Real-IP $remote_addr;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_next_upstream error timeout;
    proxy_next_upstream_tries 3;
    proxy_connect_timeout 5s;

    # nginx.ingress.kubernetes.io/proxy-read-timeout and proxy-send-timeout:
    # above the gateway's ping period, so only a dead session is cut.
    location /ws/agent {
      proxy_pass http://gateways;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout %[5]ds;
      proxy_send_timeout %[5]ds;
      proxy_buffering off;
    }
    location /agent/v1/ {
      proxy_pass http://gateways;
      proxy_set_header Connection "";
    }
    location /api/ {
      proxy_pass http://api;
      proxy_set_header Connection "";
      proxy_read_timeout 60s;
    }
    # The dashboard, as the chart's Ingress routes it: / (exact) and /ui.
    location = / {
      proxy_pass http://api;
      proxy_set_header Connection "";
    }
    location /ui/ {
      proxy_pass http://api;
      proxy_set_header Connection "";
    }
  }
}
`, dir, port, servers(apiPorts), servers(gwPorts), secs)
}

func startNginx(work string, port int, apiPorts, gwPorts []int, proxyTimeout time.Duration) (*nginx, error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		bin = "/usr/sbin/nginx"
		if _, serr := os.Stat(bin); serr != nil {
			return nil, errors.New("nginx not found (apt-get install -y nginx-light)")
		}
	}
	dir := filepath.Join(work, "nginx")
	for _, d := range []string{"tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o777); err != nil {
			return nil, err
		}
		// Workers run as an unprivileged user when the master is root.
		_ = os.Chmod(filepath.Join(dir, d), 0o777)
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(nginxConfig(dir, port, apiPorts, gwPorts, proxyTimeout)), 0o644); err != nil {
		return nil, err
	}
	args := []string{"-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log")}
	if out, err := exec.Command(bin, append(args, "-t", "-q")...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("nginx -t: %v\n%s", err, out)
	}
	logf, err := os.Create(filepath.Join(dir, "stderr.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("starting nginx: %w", err)
	}
	n := &nginx{dir: dir, port: port, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); _ = logf.Close(); close(n.done) }()
	return n, nil
}

// stop asks nginx to quit (SIGQUIT: graceful) and kills it after a while.
func (n *nginx) stop() {
	_ = n.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-n.done:
	case <-time.After(5 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
	}
}

// accessStats counts the requests nginx proxied for path prefixes with a status.
func (n *nginx) accessStats(prefix string, status int) int {
	b, err := os.ReadFile(filepath.Join(n.dir, "access.log"))
	if err != nil {
		return 0
	}
	count := 0
	want := " " + strconv.Itoa(status) + " "
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "\"GET "+prefix) || strings.Contains(line, "\"POST "+prefix) {
			if strings.Contains(line, want) {
				count++
			}
		}
	}
	return count
}

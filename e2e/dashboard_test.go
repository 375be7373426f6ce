package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/stretchr/testify/require"
)

// The browser tests drive Debian's Chromium headless (chromedp) through the
// dashboard of a real bin/viworks and of the split services. Screenshots go
// to e2e/screenshots/ (git-ignored).

// dashEnv is a running product the dashboard tests sign in to.
type dashEnv struct {
	name     string
	base     string // http://127.0.0.1:PORT
	operator string // tokens
	viewer   string
	short    func() string // a fresh operator token that expires within seconds
	adminKey string        // an admin API key (vwk_…), exchanged by the page
	site     string        // the trusted site of the running agents
	initial  []string
	// startAgent starts one more agentsim agent with this id prefix.
	startAgent func(prefix string)
}

func TestDashboardAllInOne(t *testing.T) {
	chromium := browserPath(t)
	c := embeddedCluster(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	_, op := allInOne(t, c, "viworks", dataDir, "--demo-agents", "3")
	token := func(role, ttl string) string {
		tok, err := c.run("viworks", "token", "--data-dir", dataDir, "--subject", "dash-"+role, "--role", role, "--ttl", ttl)
		require.NoError(t, err)
		return strings.TrimSpace(tok)
	}
	admin := api{base: op.base, token: token("admin", "1h")}
	require.Eventually(t, func() bool { return len(agentsOf(t, op, "online")) == 3 }, 30*time.Second, 100*time.Millisecond)
	secret := issueEnrollmentSecret(t, admin, map[string]any{"name": "dashboard", "site": "demo", "labels": map[string]string{"role": "demo"}})
	env := dashEnv{
		name: "allinone", base: op.base, operator: op.token, viewer: token("viewer", "1h"), short: func() string { return token("operator", "6s") },
		adminKey: apiKey(t, admin), site: "demo", initial: []string{"sim-0", "sim-1", "sim-2"},
		startAgent: func(prefix string) {
			c.start("agentsim-"+prefix, "agentsim", nil, "--gateway", strings.Replace(op.base, "http://", "ws://", 1)+"/ws/agent",
				"--agents", "1", "--prefix", prefix, "--enrollment-secret", secret, "--telemetry-interval", "1s")
		},
	}
	dashboardScenarios(t, chromium, env)
}

func TestDashboardSplitServices(t *testing.T) {
	chromium := browserPath(t)
	c := newCluster(t)
	sys := startSystem(t, c)
	admin := sys.admin(t, c)
	secret := issueEnrollmentSecret(t, admin, map[string]any{"name": "dashboard", "site": "web", "labels": map[string]string{"role": "ui"}})
	c.start("agentsim", "agentsim", nil, "--gateway", sys.gateways[0], "--agents", "3", "--prefix", "web-", "--enrollment-secret", secret)
	sys.waitOnline(t, 3)
	token := func(role, ttl string) string {
		tok, err := c.run("api-server", "token", "--subject", "dash-"+role, "--role", role, "--ttl", ttl)
		require.NoError(t, err)
		return strings.TrimSpace(tok)
	}
	env := dashEnv{
		name: "split", base: sys.api.base, operator: sys.api.token, viewer: token("viewer", "1h"), short: func() string { return token("operator", "6s") },
		adminKey: apiKey(t, admin), site: "web", initial: []string{"web-0", "web-1", "web-2"},
		startAgent: func(prefix string) {
			c.start("agentsim-"+prefix, "agentsim", nil, "--gateway", sys.gateways[1], "--agents", "1", "--prefix", prefix,
				"--enrollment-secret", secret, "--telemetry-interval", "1s")
		},
	}
	dashboardScenarios(t, chromium, env)
}

// browserPath finds Chromium; without it the tests skip, unless services
// are required (CI), where that is a failure.
func browserPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("VIWORKS_REQUIRE_SERVICES") == "1" {
		t.Fatal("chromium is not installed (apt-get install chromium); the dashboard tests need it")
	}
	t.Skip("chromium is not installed; skipping the browser tests")
	return ""
}

func apiKey(t *testing.T, admin api) string {
	t.Helper()
	var key struct {
		Key string `json:"key"`
	}
	require.Equal(t, http.StatusCreated, admin.do(t, http.MethodPost, "/api/v1/api-keys", map[string]any{"name": "dashboard", "role": "admin", "expires_in": 3600}, &key))
	require.True(t, strings.HasPrefix(key.Key, "vwk_"), key.Key)
	return key.Key
}

// browser is one headless Chromium tab with the problems it reported.
type browser struct {
	t        *testing.T
	ctx      context.Context
	env      dashEnv
	mu       sync.Mutex
	problems []string // console errors, exceptions, CSP violations, failed page files
	axe      string
}

var apiURL = regexp.MustCompile(`/api/v1/`)

func newBrowser(t *testing.T, chromium string, env dashEnv) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 800), chromedp.Flag("disable-dev-shm-usage", true))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &browser{t: t, ctx: ctx, env: env, axe: vendoredAxe(t)}
	require.NoError(t, chromedp.Do(ctx), "starting chromium") // the first run starts the browser: no timeout on it
	go func() {
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			// The API's own error answers (problem+json the page shows) are
			// logged by Chromium as failed loads; anything else is a problem.
			if m.Source == "network" && apiURL.MatchString(m.URL) {
				continue
			}
			if m.Type == chromedp.ConsoleError || m.IsException() || m.Source == "security" {
				b.mu.Lock()
				b.problems = append(b.problems, fmt.Sprintf("%s %s %s", m, m.Source, m.URL))
				b.mu.Unlock()
			}
		}
	}()
	return b
}

func (b *browser) run(timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	require.NoError(b.t, chromedp.Do(ctx, actions...), "%s: browser step", b.env.name)
}

// get runs one action that returns a value.
func get[T any](b *browser, timeout time.Duration, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	require.NoError(b.t, err, "%s: browser step", b.env.name)
	return v
}

func eval[T any](b *browser, expr string, opts ...chromedp.EvaluateOption) T {
	b.t.Helper()
	return get(b, 60*time.Second, chromedp.Evaluate[T](expr, opts...))
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	return get(b, 10*time.Second, chromedp.Text(chromedp.CSS(sel)))
}

func (b *browser) takeProblems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.problems
	b.problems = nil
	return p
}

// noProblems: nothing went to the console, no exception, no CSP violation.
func (b *browser) noProblems(step string) {
	b.t.Helper()
	require.Empty(b.t, b.takeProblems(), "%s: %s", b.env.name, step)
}

// signIn types the credential into the first visible input and presses Enter.
func (b *browser) signIn(credential string) {
	b.t.Helper()
	eval[any](b, `window.__previousDocument = true; undefined`)
	b.run(30*time.Second, chromedp.Navigate(b.env.base+"/"))
	// Wait for the new document and its script (Navigate may see the old one).
	require.Eventually(b.t, func() bool {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		defer cancel()
		fresh, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__previousDocument !== true && document.body.dataset.ready === "true"`))
		return err == nil && fresh
	}, 30*time.Second, 100*time.Millisecond, "the page loads")
	b.run(30*time.Second, chromedp.SendKeys(chromedp.CSS("input"), credential+kb.Enter))
	var state string
	require.Eventually(b.t, func() bool {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		defer cancel()
		var err error
		state, err = chromedp.Run(ctx, chromedp.Evaluate[string](`[location.href, document.getElementById("nav").hidden, document.getElementById("who").textContent, document.getElementById("error").textContent].join(" | ")`))
		return err == nil && strings.Contains(state, "| false |")
	}, 30*time.Second, 100*time.Millisecond, "signed in: %s", state)
	require.NotContains(b.t, state, credential, "the credential is not in the URL")
	require.Regexp(b.t, `\| false \| \S+ \((viewer|operator|admin)\) \| $`, state, "signed in")
	eval[any](b, `window.__sameDocument = true; undefined`)
}

func (b *browser) signOut() {
	b.t.Helper()
	b.run(10*time.Second, chromedp.Click(chromedp.CSS("#signout")), chromedp.WaitVisible(chromedp.CSS("#credential")))
}

func (b *browser) goTo(hash, ready string) {
	b.t.Helper()
	eval[string](b, fmt.Sprintf("location.hash = %q", hash))
	b.run(30*time.Second, chromedp.WaitVisible(chromedp.CSS(ready)))
}

// sameDocument: the page was not reloaded since sign-in (updates came live).
func (b *browser) sameDocument() {
	b.t.Helper()
	same := eval[bool](b, `window.__sameDocument === true`)
	require.True(b.t, same, "%s: the page was reloaded", b.env.name)
}

func (b *browser) screenshot(name string) {
	b.t.Helper()
	png := get(b, 20*time.Second, chromedp.CaptureScreenshot())
	dir := "screenshots"
	require.NoError(b.t, os.MkdirAll(dir, 0o755))
	require.NoError(b.t, os.WriteFile(filepath.Join(dir, b.env.name+"-"+name+".png"), png, 0o644))
}

// phoneWidth: at 390 px the page does not scroll sideways (wide tables
// scroll in their own box) and stays accessible.
func (b *browser) phoneWidth(page string) {
	b.t.Helper()
	b.run(10*time.Second, chromedp.EmulateViewport(390, 844), chromedp.Sleep(300*time.Millisecond))
	defer b.run(10*time.Second, chromedp.EmulateViewport(1280, 800))
	overflow := eval[int](b, `document.documentElement.scrollWidth - window.innerWidth`)
	require.LessOrEqual(b.t, overflow, 0, "%s: the %s page is wider than a phone", b.env.name, page)
	b.accessible(page + " (phone)")
	b.screenshot(page + "-phone")
}

type axeViolation struct {
	ID     string `json:"id"`
	Impact string `json:"impact"`
	Help   string `json:"help"`
	Nodes  []any  `json:"nodes"`
}

// accessible runs axe-core on the page: no serious or critical violation.
func (b *browser) accessible(page string) {
	b.t.Helper()
	if !eval[bool](b, `typeof window.axe === "object"`) {
		eval[any](b, b.axe+"\n;undefined")
	}
	violations := eval[[]axeViolation](b, `axe.run(document, {resultTypes: ["violations"]}).then(r => r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target)})))`, chromedp.EvalAwaitPromise)
	var bad []string
	for _, v := range violations {
		if v.Impact == "serious" || v.Impact == "critical" {
			bad = append(bad, fmt.Sprintf("%s (%s): %s at %v", v.ID, v.Impact, v.Help, v.Nodes))
		}
	}
	require.Empty(b.t, bad, "%s: accessibility of the %s page", b.env.name, page)
}

// vendoredAxe reads e2e/testdata/axe/axe.min.js and checks it against the
// version and checksum pinned beside it (make vendor-axe refreshes both).
func vendoredAxe(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("testdata", "axe", "axe.min.js"))
	require.NoError(t, err)
	pinned, err := os.ReadFile(filepath.Join("testdata", "axe", "PINNED"))
	require.NoError(t, err)
	f := strings.Fields(string(pinned))
	require.GreaterOrEqual(t, len(f), 3)
	sum := sha256.Sum256(src)
	require.Equal(t, f[2], hex.EncodeToString(sum[:]), "axe.min.js does not match testdata/axe/PINNED")
	return string(src)
}

func dashboardScenarios(t *testing.T, chromium string, env dashEnv) {
	b := newBrowser(t, chromium, env)
	row := func(id string) string { return fmt.Sprintf(`a[href="#/agents/%s"]`, id) }

	// An operator signs in and sees the running agents.
	b.signIn(env.operator)
	for _, id := range env.initial {
		b.run(30*time.Second, chromedp.WaitVisible(chromedp.CSS(row(id))))
	}
	first := eval[string](b, `[...document.querySelectorAll("input")].find(i => i.offsetParent !== null)?.id || ""`)
	require.NotEqual(t, "credential", first, "the credential field is hidden once signed in")
	b.accessible("fleet")
	b.screenshot("fleet")
	b.noProblems("fleet page")

	// The token is nowhere but in the page's memory.
	stored := eval[string](b, `location.href + "|" + JSON.stringify(localStorage) + "|" + JSON.stringify(sessionStorage) + "|" + document.cookie`)
	require.NotContains(t, stored, env.operator)
	require.NotContains(t, stored, env.operator[:20])

	// CSP: an inline script the page did not ship is refused by the browser.
	ran := eval[bool](b, `(() => { const s = document.createElement("script"); s.textContent = "window.__injected = true"; document.head.append(s); return window.__injected === true })()`)
	require.False(t, ran, "an inline script ran despite the CSP")
	require.Eventually(t, func() bool {
		for _, p := range b.takeProblems() {
			if strings.Contains(p, "Content Security Policy") {
				return true
			}
		}
		return false
	}, 10*time.Second, 100*time.Millisecond, "the CSP violation was reported")
	time.Sleep(500 * time.Millisecond)
	for _, p := range b.takeProblems() {
		require.Contains(t, p, "Content Security Policy", "only the injected script was a problem")
	}

	// Another agent starts: it appears without a reload.
	env.startAgent("new-")
	b.run(60*time.Second, chromedp.WaitVisible(chromedp.CSS(row("new-0"))))
	b.sameDocument()

	// Its telemetry charts fill in.
	b.run(10*time.Second, chromedp.Click(chromedp.CSS(row("new-0"))), chromedp.WaitVisible(chromedp.CSS(`#charts figure`)))
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		defer cancel()
		if chromedp.Do(ctx, chromedp.Click(chromedp.Search(`//button[normalize-space()="1h"]`)), chromedp.Sleep(500*time.Millisecond)) != nil {
			return false
		}
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#charts polyline.line").length`))
		return err == nil && n == 4
	}, 60*time.Second, time.Second, "the CPU, memory, disk and load charts got data")
	b.run(10*time.Second, chromedp.Click(chromedp.Search(`//button[normalize-space()="24h"]`)), chromedp.WaitVisible(chromedp.CSS(`#charts figure`)),
		chromedp.Click(chromedp.Search(`//button[normalize-space()="30d"]`)), chromedp.WaitVisible(chromedp.CSS(`#charts figure`)))
	b.accessible("agent")
	b.screenshot("agent")
	b.noProblems("agent page")

	// Send echo to a selector from the form; the preview counts the agents
	// first; the command page shows it reach succeeded live.
	b.run(10*time.Second, chromedp.Click(chromedp.Search(`//nav//a[normalize-space()="New command"]`)), chromedp.WaitVisible(chromedp.CSS("#send-form")))
	b.run(20*time.Second,
		chromedp.SetValue(chromedp.CSS("#s-args"), `{"message": "hello from the dashboard"}`),
		chromedp.SendKeys(chromedp.CSS("#s-site"), env.site),
		chromedp.WaitVisible(chromedp.CSS("#preview-summary")))
	var summary string
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		defer cancel()
		var err error
		summary, err = chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#preview-summary")))
		return err == nil &&
			strings.HasPrefix(summary, fmt.Sprintf("%d agents match: %d online", len(env.initial)+1, len(env.initial)+1))
	}, 20*time.Second, 200*time.Millisecond, "preview: %q", summary)
	b.accessible("send command")
	b.run(30*time.Second, chromedp.Click(chromedp.Search(`//button[normalize-space()="Send command"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#command-status [data-status="succeeded"]`)))
	outputs := b.text("table[aria-label=executions]")
	require.Equal(t, len(env.initial)+1, strings.Count(outputs, "hello from the dashboard"), outputs)
	b.sameDocument()
	b.accessible("command")
	b.screenshot("command")
	b.phoneWidth("command")
	b.goTo("#/fleet", row(env.initial[0]))
	b.phoneWidth("fleet")

	// A bad argument shows the API's problem, not a silent failure.
	b.goTo("#/send", "#send-form")
	b.run(20*time.Second,
		chromedp.SetValue(chromedp.CSS("#s-verb"), "no such verb!"),
		chromedp.SetValue(chromedp.CSS("#s-ids"), env.initial[0]),
		chromedp.Click(chromedp.Search(`//button[normalize-space()="Send command"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#error strong`)))
	shown := b.text("#error")
	require.Contains(t, shown, "invalid command request")
	require.Contains(t, shown, "verb:")

	// Cancel a sleep from its page.
	b.goTo("#/send", "#send-form")
	b.run(20*time.Second,
		chromedp.SetValue(chromedp.CSS("#s-verb"), "sleep"),
		chromedp.SetValue(chromedp.CSS("#s-args"), `{"seconds": 120}`),
		chromedp.SetValue(chromedp.CSS("#s-ids"), env.initial[0]),
		chromedp.Click(chromedp.Search(`//button[normalize-space()="Send command"]`)),
		chromedp.WaitVisible(chromedp.CSS(`table[aria-label=executions] [data-status="running"]`)),
		chromedp.Click(chromedp.CSS("#cancel")),
		chromedp.WaitVisible(chromedp.CSS(`#command-status [data-status="cancelled"]`)))
	sleepURL := get(b, 5*time.Second, chromedp.Location())
	sleepHash := sleepURL[strings.Index(sleepURL, "#"):]

	// The Commands list, Status and (refused) Admin pages.
	b.run(10*time.Second, chromedp.Click(chromedp.Search(`//nav//a[normalize-space()="Commands"]`)), chromedp.WaitVisible(chromedp.CSS(`table[aria-label=commands] [data-status="cancelled"]`)))
	b.accessible("commands")
	b.screenshot("commands")
	b.goTo("#/status", "table[aria-label=gateways]")
	b.accessible("status")
	b.screenshot("status")
	adminLink := eval[bool](b, `!document.querySelector('nav a[href="#/admin"]').hidden`)
	require.False(t, adminLink, "an operator sees no Admin link")
	b.noProblems("operator pages")

	// Schedules: a 1 s schedule made through the API shows on the Schedules
	// page, its runs appear live on its page, and the operator pauses it there.
	op := api{base: env.base, token: env.operator}
	tick := dashSchedule(t, op, "dash tick", 1, env.initial[2])
	b.run(10*time.Second, chromedp.Click(chromedp.Search(`//nav//a[normalize-space()="Schedules"]`)),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`table[aria-label=schedules] a[href="#/schedules/%s"]`, tick.ID))))
	listed := b.text("table[aria-label=schedules]")
	require.Contains(t, listed, "every 1 s")
	require.Contains(t, listed, "verb echo")
	b.accessible("schedules")
	b.screenshot("schedules")
	b.run(10*time.Second, chromedp.Click(chromedp.CSS(fmt.Sprintf(`a[href="#/schedules/%s"]`, tick.ID))),
		chromedp.WaitVisible(chromedp.CSS(`#schedule-state [data-status="active"]`)))
	var runs int
	require.Eventually(t, func() bool {
		runs = eval[int](b, `document.querySelectorAll('table[aria-label=runs] a[href^="#/commands/"]').length`)
		done := eval[int](b, `document.querySelectorAll('table[aria-label=runs] [data-status="succeeded"]').length`)
		return runs >= 3 && done >= 1
	}, 30*time.Second, 250*time.Millisecond, "runs appear on the schedule's page (%d so far)", runs)
	b.sameDocument()
	b.accessible("schedule")
	b.screenshot("schedule")
	b.run(20*time.Second, chromedp.Click(chromedp.CSS("#pause")),
		chromedp.WaitVisible(chromedp.CSS(`#schedule-state [data-status="paused"]`)), chromedp.WaitVisible(chromedp.CSS("#resume")))
	var paused scheduleView
	require.Equal(t, http.StatusOK, op.do(t, http.MethodGet, "/api/v1/schedules/"+tick.ID, nil, &paused))
	require.True(t, paused.Paused, "the page paused the schedule")
	b.phoneWidth("schedule")
	// A run links to its command page, which links back.
	b.run(20*time.Second, chromedp.Click(chromedp.CSS(`table[aria-label=runs] a[href^="#/commands/"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#command-status [data-status]`)),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`a#command-schedule[href="#/schedules/%s"]`, tick.ID))))
	require.Contains(t, b.text("table[aria-label=executions]"), "tick from a schedule")

	// Delete asks twice, then the schedule is gone; its runs stay commands.
	doomed := dashSchedule(t, op, "dash doomed", 3600, env.initial[2])
	b.goTo("#/schedules/"+doomed.ID, "#delete")
	b.run(10*time.Second, chromedp.Click(chromedp.CSS("#delete")))
	require.Equal(t, "Confirm delete", b.text("#delete"))
	require.Equal(t, http.StatusOK, op.do(t, http.MethodGet, "/api/v1/schedules/"+doomed.ID, nil, nil), "one click deletes nothing")
	b.run(20*time.Second, chromedp.Click(chromedp.CSS("#delete")), chromedp.WaitVisible(chromedp.CSS(`table[aria-label=schedules]`)))
	require.Equal(t, http.StatusNotFound, op.do(t, http.MethodGet, "/api/v1/schedules/"+doomed.ID, nil, nil))
	require.NotContains(t, b.text("table[aria-label=schedules]"), "dash doomed")
	require.Equal(t, `Deleted the schedule "dash doomed"; its runs stay as commands.`, b.text("#message"))
	b.noProblems("schedule pages")
	b.signOut()

	// An admin signs in with an API key and verifies the audit trail.
	b.signIn(env.adminKey)
	b.goTo("#/admin", "table[aria-label=\"API keys\"]")
	b.run(20*time.Second, chromedp.Click(chromedp.CSS("#verify")), chromedp.WaitVisible(chromedp.CSS(`#verify-result [data-status="ok"]`)))
	b.accessible("admin")
	b.screenshot("admin")
	b.noProblems("admin page")

	// Templates: the list, one template with its versions and parameters (a
	// secret one shown as secret, never a value), and Retire for admins.
	var exchanged struct {
		Token string `json:"token"`
	}
	require.Equal(t, http.StatusOK, api{base: env.base}.do(t, http.MethodPost, "/api/v1/auth/token", map[string]any{"api_key": env.adminKey}, &exchanged))
	admin := api{base: env.base, token: exchanged.Token}
	for _, desc := range []string{"greets, first cut", "greets"} {
		require.Equal(t, http.StatusCreated, admin.do(t, http.MethodPost, "/api/v1/templates", map[string]any{
			"name": "dash-greet", "description": desc, "verb": "echo",
			"args": map[string]any{"message": "{{greeting}}", "token": "{{api_token}}"},
			"parameters": map[string]any{
				"greeting":  map[string]any{"type": "string", "required": true, "description": "what to say"},
				"times":     map[string]any{"type": "integer", "default": 3},
				"api_token": map[string]any{"type": "string", "secret": true, "required": true},
			},
		}, nil))
	}
	require.Equal(t, http.StatusCreated, admin.do(t, http.MethodPost, "/api/v1/templates", map[string]any{"name": "dash-old", "verb": "echo"}, nil))
	b.run(10*time.Second, chromedp.Click(chromedp.Search(`//nav//a[normalize-space()="Templates"]`)),
		chromedp.WaitVisible(chromedp.CSS(`table[aria-label=templates] a[href="#/templates/dash-greet"]`)))
	b.accessible("templates")
	b.screenshot("templates")
	b.run(10*time.Second, chromedp.Click(chromedp.CSS(`a[href="#/templates/dash-greet"]`)), chromedp.WaitVisible(chromedp.CSS("table[aria-label=versions]")))
	versions := eval[[]string](b, `[...document.querySelectorAll("table[aria-label=versions] tbody tr")].map(r => r.cells[0].textContent)`)
	require.Equal(t, []string{"2", "1"}, versions, "every version, newest first")
	secret := eval[[]string](b, `[...([...document.querySelectorAll("table[aria-label=parameters] tbody tr")].find(r => r.cells[0].textContent === "api_token")?.cells || [])].map(c => c.textContent)`)
	require.Equal(t, []string{"api_token", "string", "required", "secret", "—", ""}, secret)
	times := eval[[]string](b, `[...([...document.querySelectorAll("table[aria-label=parameters] tbody tr")].find(r => r.cells[0].textContent === "times")?.cells || [])].map(c => c.textContent)`)
	require.Equal(t, []string{"times", "integer", "optional", "no", "3", ""}, times)
	b.accessible("template")
	b.screenshot("template")

	// The Send form sends from a template; the secret param is never shown back.
	b.goTo("#/send", "#send-form")
	require.Eventually(t, func() bool {
		return eval[bool](b, `document.querySelector('#s-template option[value="dash-greet"]') !== null`)
	}, 10*time.Second, 100*time.Millisecond, "the templates are offered")
	b.run(20*time.Second,
		chromedp.SetValue(chromedp.CSS("#s-template"), "dash-greet"))
	disabled := eval[bool](b, `(() => { const s = document.getElementById("s-template"); s.dispatchEvent(new Event("change")); return document.getElementById("s-verb").disabled })()`)
	require.True(t, disabled, "the verb comes from the template")
	b.run(30*time.Second,
		chromedp.SetValue(chromedp.CSS("#s-params"), `{"greeting": "hello via a template", "api_token": "t0ps3cret-dash"}`),
		chromedp.SetValue(chromedp.CSS("#s-ids"), env.initial[0]),
		chromedp.Click(chromedp.Search(`//button[normalize-space()="Send command"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#command-status [data-status="succeeded"]`)))
	page := b.text("#view")
	require.Contains(t, page, "hello via a template")
	require.NotContains(t, page, "t0ps3cret-dash", "a secret param is redacted")
	b.accessible("send from template")
	b.goTo("#/templates/dash-old", "#retire")
	b.run(10*time.Second, chromedp.Click(chromedp.CSS("#retire")))
	require.Equal(t, "Confirm retire", b.text("#retire"))
	b.run(20*time.Second, chromedp.Click(chromedp.CSS("#retire")), chromedp.WaitVisible(chromedp.CSS(`table[aria-label=templates] a[href="#/templates/dash-greet"]`)))
	require.Equal(t, http.StatusNotFound, admin.do(t, http.MethodGet, "/api/v1/templates/dash-old", nil, nil))
	require.NotContains(t, b.text("table[aria-label=templates]"), "dash-old")
	require.Contains(t, b.text("#message"), `Retired the template "dash-old"`)
	b.noProblems("template pages")
	b.signOut()

	// A viewer finds no send or cancel controls, even on a running command.
	var running commandView
	require.Equal(t, http.StatusAccepted, op.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
		"verb": "sleep", "args": map[string]any{"seconds": 120}, "agent_targets": []string{env.initial[1]}}, &running))
	t.Cleanup(func() { op.do(t, http.MethodDelete, "/api/v1/commands/"+running.ID, nil, nil) })
	b.signIn(env.viewer)
	who := eval[string](b, `document.getElementById("who").textContent + " send link hidden: " + document.querySelector('nav a[href="#/send"]').hidden`)
	require.Equal(t, "dash-viewer (viewer) send link hidden: true", who, "a viewer sees no link to the send form")
	b.goTo(sleepHash, `#command-status [data-status="cancelled"]`)
	b.goTo("#/commands/"+running.ID, `table[aria-label=executions] [data-status="running"]`)
	cancels := eval[int](b, `document.querySelectorAll("#cancel").length`)
	require.Zero(t, cancels, "a viewer sees no Cancel on a running command")
	b.goTo("#/send", "#view h1")
	text := b.text("#view")
	require.Contains(t, text, "Not allowed")
	controls := eval[int](b, `[...document.querySelectorAll("button")].filter(x => /Send command|Cancel/.test(x.textContent)).length`)
	require.Zero(t, controls)
	b.accessible("viewer")
	// Nor Pause, Resume, Delete or Retire; the API refuses them anyway.
	b.goTo("#/schedules/"+tick.ID, `#schedule-state [data-status="paused"]`)
	b.run(10*time.Second, chromedp.WaitVisible(chromedp.CSS(`table[aria-label=runs] a[href^="#/commands/"]`)))
	controls = eval[int](b, `document.querySelectorAll("#pause, #resume, #delete, #retire").length`)
	require.Zero(t, controls, "a viewer sees no schedule controls")
	b.accessible("viewer schedule")
	b.goTo("#/templates/dash-greet", "table[aria-label=versions]")
	controls = eval[int](b, `document.querySelectorAll("#retire").length`)
	require.Zero(t, controls, "a viewer sees no Retire")
	viewer := api{base: env.base, token: env.viewer}
	require.Equal(t, http.StatusForbidden, viewer.do(t, http.MethodPost, "/api/v1/schedules/"+tick.ID+"/resume", nil, nil))
	require.Equal(t, http.StatusForbidden, viewer.do(t, http.MethodDelete, "/api/v1/templates/dash-greet", nil, nil))
	b.noProblems("viewer pages")
	b.signOut()

	// A token that expires ends the session with a clear message.
	b.signIn(env.short())
	var state string
	require.Eventually(t, func() bool {
		state = eval[string](b, `[document.getElementById("signin").hidden, document.getElementById("message").textContent, document.getElementById("error").textContent].join("|")`)
		return strings.HasPrefix(state, "false|") && strings.Contains(state, "expired")
	}, 40*time.Second, 250*time.Millisecond, "the session ends with a message: %s", state)
	b.noProblems("expiry")
}

// dashSchedule creates an echo schedule every interval seconds on agent;
// the test deletes it at the end.
func dashSchedule(t *testing.T, op api, name string, interval int, agent string) scheduleView {
	t.Helper()
	var s scheduleView
	require.Equal(t, http.StatusCreated, op.do(t, http.MethodPost, "/api/v1/schedules", map[string]any{
		"name": name, "interval_seconds": interval, "verb": "echo", "args": map[string]any{"message": "tick from a schedule"},
		"agent_targets": []string{agent},
	}, &s))
	t.Cleanup(func() { op.do(t, http.MethodDelete, "/api/v1/schedules/"+s.ID, nil, nil) })
	return s
}

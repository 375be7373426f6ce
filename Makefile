# ViWorkS Backend Agent — the two set-up commands are `make run` and `make test`.
# Builds use one fixed Go, fetched by the go command from the module proxy on
# first use (a machine's own Go may be older; it ignores a toolchain line in go.mod).
GOTOOLCHAIN ?= go1.27.3
export GOTOOLCHAIN
GO       ?= go
BIN      ?= bin
# Every module of go.work (deploy/charttest runs in `make chart-test`).
MODULES  := $(filter-out deploy/charttest deploy/releasetest,$(patsubst ./%,%,$(shell sed -n 's/^[[:space:]]*\(\.\/[^[:space:]]*\)$$/\1/p' go.work)))
PKGS     := $(addprefix ./,$(addsuffix /...,$(MODULES)))
DATA_DIR    ?= data
DEMO_AGENTS ?= 5
PORT        ?= 8080
# Version, commit and build date every binary's --version prints (pkg/buildinfo);
# the date is the commit's, so that two builds of one commit are byte-identical.
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
DATE     ?= $(shell git log -1 --format=%cI 2>/dev/null || echo unknown)
BUILDINFO := github.com/viworks/backend-agent/pkg/buildinfo
LDFLAGS  := -s -w -buildid= -X $(BUILDINFO).Version=$(VERSION) -X $(BUILDINFO).Commit=$(COMMIT) -X $(BUILDINFO).Date=$(DATE)
GOBUILD  := CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)'
GOLANGCI_LINT ?= $(shell $(GO) env GOPATH)/bin/golangci-lint
GOLANGCI_LINT_VERSION ?= v2.15.0
GOVULNCHECK ?= $(shell $(GO) env GOPATH)/bin/govulncheck
# The Go vulnerability database, fetched as a Go module and indexed locally, so
# govulncheck needs no network beyond the module proxy.
VULNDB_VERSION ?= v0.0.0-20261105234957-e22db6528018
VULNDB_DIR     ?= .cache/vulndb-$(VULNDB_VERSION)
# Modules whose code ships (govulncheck looks at what a binary can reach).
SHIP_MODULES   := pkg api-server agent-gateway scheduler agentsim standalone viworks-agent viworksctl

# make release: the binaries every archive holds, NAME=PACKAGE each.
RELEASE_BINARIES ?= api-server=./api-server agent-gateway=./agent-gateway scheduler=./scheduler agentsim=./agentsim viworks=./standalone viworks-agent=./viworks-agent viworksctl=./viworksctl
PLATFORMS ?= linux/amd64 linux/arm64 darwin/amd64 darwin/arm64
DIST      ?= dist
# Archive timestamps are the commit's, so two runs give identical bytes.
SOURCE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

# Redocly's OpenAPI linter, from the npm registry through npx.
REDOCLY_VERSION ?= 2.77.0

.PHONY: help build release release-test test lint openapi-lint vulncheck run bench clean tidy chart-test e2e

help: ## this list
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | awk -F '\t' '{printf "  make %-12s %s\n", $$1, $$2}'

build: ## binaries into ./bin
	@mkdir -p $(BIN)
	@echo 'building the binaries into $(BIN)/ (the first build fetches modules and compiles for a few minutes)'
	@for b in $(RELEASE_BINARIES); do echo "  $(BIN)/$${b%%=*} from $${b#*=}"; $(GOBUILD) -o $(BIN)/$${b%%=*} $${b#*=} || exit 1; done

release: ## static archives for $(PLATFORMS) into $(DIST)/ (binaries, install.sh, units, examples), with SHA256SUMS
	rm -rf $(DIST) && mkdir -p $(DIST)
	@set -e; for p in $(PLATFORMS); do \
	  os=$${p%/*}; arch=$${p#*/}; \
	  case $$os/$$arch in */amd64) a=x86_64;; linux/arm64) a=aarch64;; *) a=$$arch;; esac; \
	  name=viworks-backend-agent-$${os}_$$a; d=$(DIST)/$$name; \
	  echo "building $$name"; mkdir -p $$d/bin $$d/systemd; \
	  for b in $(RELEASE_BINARIES); do GOOS=$$os GOARCH=$$arch $(GOBUILD) -o $$d/bin/$${b%%=*} $${b#*=}; done; \
	  cp install.sh env.example config.example.toml README.md LICENSE $$d/; \
	  cp deploy/systemd/*.service $$d/systemd/; \
	  tar --sort=name --format=gnu --mtime=@$(SOURCE_EPOCH) --owner=0 --group=0 --numeric-owner \
	    --mode='u+rwX,go+rX,go-w' -C $(DIST) -cf - $$name | gzip -n -9 > $$d.tar.gz; \
	  rm -rf $$d; \
	done
	cd $(DIST) && sha256sum *.tar.gz > SHA256SUMS && cat SHA256SUMS

print-release-binaries:
	@echo $(foreach b,$(RELEASE_BINARIES),$(firstword $(subst =, ,$(b))))

release-test: ## make release twice for one platform (RELEASE_TEST_PLATFORM), compare, then install.sh, units and the installed all-in-one
	cd deploy/releasetest && $(GO) test -count=1 -timeout 20m -v ./...

test: ## all tests with the race detector (service-backed tests skip without Postgres/Redis; the first lines say which)
	@$(GO) run ./pkg/testenv/cmd/testenv
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

lint: vulncheck ## gofmt, then golangci-lint (.golangci.yml: errcheck, govet, staticcheck, unused, bodyclose, gosec, depguard) on every module, govulncheck
	@test -z "$$(gofmt -l $(MODULES) deploy)" || { gofmt -l $(MODULES) deploy; echo 'gofmt: files above need formatting'; exit 1; }
	@test -x $(GOLANGCI_LINT) || { echo 'installing golangci-lint $(GOLANGCI_LINT_VERSION) (once, a few minutes)'; $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION); }
	@for m in $(MODULES) deploy/charttest deploy/releasetest; do echo "golangci-lint $$m"; (cd $$m && $(GOLANGCI_LINT) run --config $(CURDIR)/.golangci.yml ./...) || exit 1; done

openapi-lint: ## Redocly's linter on api-server/apiserver/openapi.yaml, the file the binaries embed (rules in redocly.yaml; needs npx)
	REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true npx --yes @redocly/cli@$(REDOCLY_VERSION) lint

vulncheck: ## govulncheck of every shipped module against the vulnerability database (fetched as the Go module golang.org/x/vulndb)
	@test -x $(GOVULNCHECK) || $(GO) install golang.org/x/vuln/cmd/govulncheck@v1.9.0
	@test -f $(VULNDB_DIR)/index/db.json || { echo 'indexing golang.org/x/vulndb@$(VULNDB_VERSION) (once, ~30 s)'; \
	  src=$$($(GO) mod download -json golang.org/x/vulndb@$(VULNDB_VERSION) | sed -n 's/.*"Dir": "\(.*\)".*/\1/p'); \
	  out=$(abspath $(VULNDB_DIR)); mkdir -p $$out; \
	  (cd $$src && GOFLAGS=-mod=mod $(GO) run ./cmd/indexdb -vulns data/osv -out $$out); }
	@for m in $(SHIP_MODULES); do echo "govulncheck $$m"; (cd $$m && $(GOVULNCHECK) -db file://$(abspath $(VULNDB_DIR)) ./...) || exit 1; done

run: ## the whole product in one process on embedded storage, with demo agents (PORT=8080, DATA_DIR=data, DEMO_AGENTS=5)
	@mkdir -p $(BIN)
	@echo 'building $(BIN)/viworks (the first build fetches modules and compiles for a few minutes)'
	@$(GOBUILD) -o $(BIN)/viworks ./standalone
	$(BIN)/viworks --data-dir $(DATA_DIR) --port $(PORT) --demo-agents $(DEMO_AGENTS) --log-format text

bench: ## real services on loopback; prints each figure beside its target and this machine's limits (BENCH_QUICK=1: small)
	$(GO) run ./bench

e2e: build ## multi-pod system test: nginx, 2 api-servers, 3 gateways, 2 schedulers, private Postgres/Redis, 1,000 agents, 6 fault scenarios (E2E_QUICK=1: 200 agents)
	$(GO) run ./e2e/systest --bin $(BIN)

chart-test: ## Helm chart + kustomize manifests: helm lint/template, strict decoding, checks against the code (installs helm if missing)
	@command -v helm >/dev/null 2>&1 || test -x "$$($(GO) env GOPATH)/bin/helm" || { echo 'installing helm v3.22.0 with go install (a few minutes)'; $(GO) install helm.sh/helm/v3/cmd/helm@v3.22.0; }
	cd deploy/charttest && $(GO) test -count=1 ./...

tidy: ## go mod tidy in every module of go.work
	@for m in $(MODULES) deploy/charttest; do echo "tidy $$m"; (cd $$m && $(GO) mod tidy) || exit 1; done

clean: ## remove ./bin
	rm -rf $(BIN)

# axe-core, the accessibility checker the browser tests inject (test-only, vendored in e2e/testdata/axe).
AXE_VERSION ?= 4.14.1
.PHONY: vendor-axe
vendor-axe: ## refresh e2e/testdata/axe from the npm registry (AXE_VERSION), recording version and sha256
	@tmp=$$(mktemp -d) && cd $$tmp && npm pack --silent axe-core@$(AXE_VERSION) >/dev/null && tar -xzf axe-core-$(AXE_VERSION).tgz package/axe.min.js package/LICENSE && \
	  mkdir -p $(CURDIR)/e2e/testdata/axe && cp package/axe.min.js package/LICENSE $(CURDIR)/e2e/testdata/axe/ && \
	  printf 'axe-core %s %s axe.min.js (npm pack axe-core@%s; make vendor-axe)\n' $(AXE_VERSION) $$(sha256sum package/axe.min.js | cut -d' ' -f1) $(AXE_VERSION) > $(CURDIR)/e2e/testdata/axe/PINNED && \
	  rm -rf $$tmp && cat $(CURDIR)/e2e/testdata/axe/PINNED

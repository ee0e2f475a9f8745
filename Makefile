# Two commands: `make run` installs and starts the gateway; `make test` installs and runs the tests.
PORT ?= 8143
HOST ?= 127.0.0.1
WEB_PORT ?= 8081
CONFIG ?= proxy.yaml

INTERCEPT_PORT ?= 8080
TOOL ?= mitmdump

.PHONY: setup setup-test run web intercept cores fleet test lint bench screenshots

# what running needs (mitmproxy and a few libraries); setup-test adds the SDKs and test tools
setup:
	@scripts/setup.sh run

setup-test:
	@scripts/setup.sh test

run: setup
	.venv/bin/mitmdump -s addons/gateway.py --mode reverse:http://127.0.0.1:1@$(PORT) \
		--listen-host $(HOST) --set connection_strategy=lazy --set gateway_config=$(CONFIG)

# mitmweb's page: the URL below, with the token mitmweb prints (or its web_password)
web: setup
	@echo "mitmweb: open http://127.0.0.1:$(WEB_PORT)/ (the gateway listens on $(HOST):$(PORT))"
	.venv/bin/mitmweb -s addons/gateway.py --mode reverse:http://127.0.0.1:1@$(PORT) \
		--listen-host $(HOST) --set connection_strategy=lazy --set gateway_config=$(CONFIG) \
		--set web_port=$(WEB_PORT)

# one gateway per core behind HAProxy (deploy/haproxy.cfg; README "Running on several cores / hosts")
cores: setup
	@CORES=$(CORES) PORT=$(PORT) HOST=$(HOST) CONFIG=$(CONFIG) scripts/cores.sh

# the reference deployment: FLEET gateways (default 2) sharing Redis and PostgreSQL from the
# distribution, behind HAProxy (README "Running on several cores / hosts")
fleet: setup
	@FLEET=$(FLEET) PORT=$(PORT) HOST=$(HOST) CONFIG=$(CONFIG) scripts/fleet.sh

# intercept mode (README "Intercept mode"): an HTTPS proxy for the coding CLIs on INTERCEPT_PORT, the
# gateway's own routes beside it on PORT; TOOL=mitmweb to watch the calls in mitmweb (WEB_PORT)
intercept: setup
	@echo "Start the CLI with (the CA file appears on the first start):"
	@echo "  export HTTPS_PROXY=http://$(HOST):$(INTERCEPT_PORT) NO_PROXY=localhost,127.0.0.1"
	@echo "  export NODE_EXTRA_CA_CERTS=$$HOME/.mitmproxy/mitmproxy-ca-cert.pem"
	@echo "  (Codex: CODEX_CA_CERTIFICATE, see README \"Intercept mode\")"
	.venv/bin/$(TOOL) -s addons/gateway.py --mode regular@$(INTERCEPT_PORT) --mode reverse:http://127.0.0.1:1@$(PORT) \
		--listen-host $(HOST) --set connection_strategy=lazy --set gateway_config=$(CONFIG) \
		$(if $(filter mitmweb,$(TOOL)),--set web_port=$(WEB_PORT) --set web_open_browser=false)

test: setup-test
	.venv/bin/python -m pytest -q

# ruff and mypy as configured in pyproject.toml (.ci/run runs this before the tests)
lint: setup-test
	.venv/bin/ruff check .
	.venv/bin/mypy

bench: setup-test
	.venv/bin/python bench/bench.py
	.venv/bin/python bench/streams.py --streams 100 200 1000
	.venv/bin/python bench/cores.py

# PNGs of each web console page (/ui) for the README, in docs/screenshots/ (needs Debian's chromium)
screenshots: setup-test
	.venv/bin/python scripts/console_screenshots.py

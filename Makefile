# Two commands: `make run` installs and starts the gateway; `make test` installs and runs the tests.
PORT ?= 8143
HOST ?= 127.0.0.1
CONFIG ?= proxy.yaml

.PHONY: setup run web test bench

setup:
	@scripts/setup.sh

run: setup
	.venv/bin/mitmdump -s addons/gateway.py --mode reverse:http://127.0.0.1:1@$(PORT) \
		--listen-host $(HOST) --set connection_strategy=lazy --set gateway_config=$(CONFIG)

web: setup
	.venv/bin/mitmweb -s addons/gateway.py --mode reverse:http://127.0.0.1:1@$(PORT) \
		--listen-host $(HOST) --set connection_strategy=lazy --set gateway_config=$(CONFIG)

test: setup
	.venv/bin/python -m pytest -q

bench: setup
	.venv/bin/python bench/bench.py

"""Running the gateway: the management API and CLI, proxy.yaml edits, the request log, metrics,
first-run detection."""

"""Running the gateway: the management API and CLI, proxy.yaml edits, the request log, metrics, persisted state, first-run detection."""

"""The mitmproxy addons gateway.py loads: one concern each, hooks only; the work is done in the
other groups."""

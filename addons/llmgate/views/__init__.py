"""mitmweb content views: SSE and event-stream bodies, and LLM exchanges read as a person reads them."""

"""A client request's way through the gateway: which endpoint and API, routing, pools and
failover, the one provider call, upstream I/O and the stream relay."""

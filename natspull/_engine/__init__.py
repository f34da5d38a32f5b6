"""The pull engine: the message queue, pull requests and their modes, heartbeats, leases,
the ordered mode and the pull settings."""

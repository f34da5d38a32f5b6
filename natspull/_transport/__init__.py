"""The transport: the loop thread, the door to nats-py (wire, fast parser, error translation),
the outbox and the connection."""

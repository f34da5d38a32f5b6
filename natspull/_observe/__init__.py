"""What natspull reports: consumer events, the stats snapshots, OpenTelemetry."""

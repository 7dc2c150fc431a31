"""What reaches the console: log levels and library chatter (console), the line per run with its
progress bar (progress), a Hydra sweep's lines and summary (sweep_progress)."""

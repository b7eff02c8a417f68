"""The process: CLI, service wiring, config, logs, demo and replay."""

"""pbxcrm's HTTP port: click-to-call, call history, recordings, all behind per-route auth."""

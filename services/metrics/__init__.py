"""The metrics service: utilization, GPU count history and miner means."""

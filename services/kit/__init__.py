"""What every service shares: settings, database, server bootstrap, errors, logging, channels."""

"""The jobs service: jobs of job-only chutes: creation, job tokens, output files."""

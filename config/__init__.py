"""Settings read from the environment, Celery configuration, and shipped plans."""

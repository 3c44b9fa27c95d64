"""Running the service: the job scheduler and the system log."""

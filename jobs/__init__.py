"""Entry points: the `millpond` CLI, the Spark session, config loading and one file per job."""

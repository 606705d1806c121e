"""A Celery configuration module shared by the test workers and the engine's message formatting
(``CELERY_CONFIG_MODULE=tests.celeryconfig``), as a user would share theirs."""

task_routes = {"tests.routed.*": {"queue": "routed_by_celery"}}
task_ignore_result = True
worker_enable_remote_control = False
broker_connection_retry_on_startup = True

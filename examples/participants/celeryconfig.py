"""Celery settings shared by the example Celery worker and the engine (which formats the task
messages with them): set ``CELERY_CONFIG_MODULE=examples.participants.celeryconfig`` for both.

The example tasks go to the queue named by ``BUREAUCRAT_CELERY_QUEUE`` (default ``celery``).
"""

import os

task_routes = {"examples.*": {"queue": os.environ.get("BUREAUCRAT_CELERY_QUEUE", "celery")}}
task_ignore_result = True
worker_hijack_root_logger = False
broker_connection_retry_on_startup = True

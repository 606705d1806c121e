"""How the engine reaches participants of each kind, as outgoing messages.

taskqueue participants get the plain workitem on ``worker_<participant>`` (built in
``bureaucrat.service``); Celery participants get a Celery task message (``celery``).
"""

# The bureaucrat engine, its CLIs and the example participants in one image.
#   docker build -t bureaucrat .
#   docker run --rm bureaucrat bureaucrat --help
# docker-compose.yml runs the engine, the web console, a Celery worker and a taskqueue worker
# from it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system bureaucrat \
    && useradd --system --gid bureaucrat --home-dir /srv/bureaucrat bureaucrat

WORKDIR /srv/bureaucrat
COPY pyproject.toml README.md ./
COPY bureaucrat ./bureaucrat
RUN pip install .
COPY config ./config
COPY examples ./examples
RUN mkdir -p /var/lib/bureaucrat && chown bureaucrat:bureaucrat /var/lib/bureaucrat

USER bureaucrat
# The examples' participants import as examples.participants.*
ENV PYTHONPATH=/srv/bureaucrat \
    BUREAUCRAT_DATABASE_URL=sqlite:////var/lib/bureaucrat/bureaucrat.db
VOLUME ["/var/lib/bureaucrat"]

# In a container the daemon stays in the foreground and logs to stderr.
CMD ["bureaucrat", "-f", "-c", "/srv/bureaucrat/config/bureaucrat.conf"]

# The contact-form service. Build: docker build -t contact-form .
# Keys:   docker run --rm -e SERVICE_ENV=development -e MAIL_SERVER=unused contact-form \
#           flask --app wsgi keys generate
# Web:    docker run -p 8000:8000 -e SECRET_KEY=... -e SEAL_PUBLIC_KEY=... -e SEAL_PRIVATE_KEY=... \
#           -e CLINIC_INBOX=... -e MAIL_SERVER=... -e MAIL_DEFAULT_SENDER=... \
#           -v contact-data:/app/instance contact-form
# Worker: the same image with DELIVERY_WORKER=external on the web container and the command
#           flask --app wsgi outbox work
# (compose.yaml runs both, with PostgreSQL and Redis; docs/deploy.md explains.)

# Build stage: install the pinned requirements into a virtual environment.
FROM python:3.11.7-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.txt /tmp/requirements.txt
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install -r /tmp/requirements.txt

# Final stage: the same pinned base, the environment and the code; no compilers, no pip cache.
FROM python:3.11.7-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SERVICE_ENV=production

RUN useradd --create-home --uid 10001 service
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=service:service config.py wsgi.py gunicorn.conf.py ./
COPY --chown=service:service service ./service
# The instance folder holds the SQLite store by default: mount a volume here to keep it.
RUN mkdir -p /app/instance && chown service:service /app/instance
USER service

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request, sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"

# gunicorn.conf.py: a worker per CPU on 0.0.0.0:8000, each with an embedded delivery worker
# unless DELIVERY_WORKER=external. With several workers, set RATELIMIT_STORAGE_URI=redis://...
# (the service warns at start-up otherwise) or WEB_CONCURRENCY=1.
CMD ["gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]

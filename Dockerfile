# The contact-form service. Build: docker build -t contact-form .
# Run:   docker run -p 8000:8000 -e SECRET_KEY=... -e CLINIC_INBOX=... -e MAIL_SERVER=... \
#          -e MAIL_DEFAULT_SENDER=... -v contact-data:/app/instance contact-form
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SERVICE_ENV=production

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

RUN useradd --create-home --uid 10001 service
COPY --chown=service:service config.py wsgi.py gunicorn.conf.py ./
COPY --chown=service:service service ./service
# The instance folder holds the SQLite store by default: mount a volume here to keep it.
RUN mkdir -p /app/instance && chown service:service /app/instance
USER service

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request, sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"

# One process by default: the embedded delivery worker runs inside it. For a separate worker,
# set DELIVERY_WORKER=external here and run the same image as: flask --app wsgi outbox work
# gunicorn.conf.py: one worker with 4 threads on 0.0.0.0:8000 (WEB_CONCURRENCY for more workers,
# with RATELIMIT_STORAGE_URI=redis://... so that they share one count).
CMD ["gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]

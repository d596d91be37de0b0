"""(c) A minimal Django project serving django-contact-form with Django's SMTP email backend.

Configured from the environment: SECRET_KEY, MAIL_SERVER, MAIL_PORT, MAIL_DEFAULT_SENDER,
CLINIC_INBOX. No database: the contact form needs none, and CSRF uses its cookie.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = os.environ["SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = ["django_contact_form"]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "urls"
WSGI_APPLICATION = "wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
DATABASES: dict = {}
USE_I18N = True
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING_CONFIG = None

EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = os.environ["MAIL_SERVER"]
EMAIL_PORT = int(os.environ["MAIL_PORT"])
EMAIL_TIMEOUT = 30
DEFAULT_FROM_EMAIL = os.environ["MAIL_DEFAULT_SENDER"]
# django-contact-form sends to MANAGERS.
MANAGERS = [("Front desk", os.environ["CLINIC_INBOX"])]

"""The contact form at /contact/ and its thank-you page at /contact/sent/."""

from django.urls import include, path

urlpatterns = [path("contact/", include("django_contact_form.urls"))]

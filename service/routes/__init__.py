"""HTTP routes: the form page, the JSON API and the health check."""

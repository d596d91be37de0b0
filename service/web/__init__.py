"""The web: the routes, error handlers, security headers, origins, templates and static files."""

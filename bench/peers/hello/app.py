"""(a) The ceiling: a bare Flask app that answers `hello`."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello() -> str:
    """Answer hello."""
    return "hello"

"""(e) The floor of a durable service: bare Flask that stores each JSON post and says 202.

No validation, no captcha, no sealing, no log line of its own: the least any service must do
before it may say "thank you", with the service's own durability (SQLite in WAL mode,
`synchronous=FULL`, the answer sent only once the commit is on disk). What the service spends
above this row is its checks; what this row spends below `hello` is durability.
"""

import json
import os
import sqlite3
import threading
import uuid

from flask import Flask, request

app = Flask(__name__)
DATABASE = os.environ["DURABLE_DATABASE"]  # created, in WAL mode, by bench.py before start-up
connections = threading.local()


def connection() -> sqlite3.Connection:
    """This thread's connection, committing to disk before each commit returns."""
    db = getattr(connections, "db", None)
    if db is None:
        db = sqlite3.connect(DATABASE, timeout=10, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA synchronous=FULL")
        connections.db = db
    return db


@app.get("/")
def ready() -> str:
    """Answer that the app is up."""
    return "ready"


@app.post("/api/enquiries")
def store() -> tuple[dict, int]:
    """Store the posted JSON in its own transaction, then answer 202 with its id."""
    enquiry_id = uuid.uuid4().hex
    db = connection()
    db.execute("BEGIN IMMEDIATE")
    db.execute(
        "INSERT INTO enquiries (id, body) VALUES (?, ?)",
        (enquiry_id, json.dumps(request.get_json())),
    )
    db.execute("COMMIT")
    return {"id": enquiry_id}, 202

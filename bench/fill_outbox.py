"""Queue N enquiries in the store named by DATABASE_URL, through the service's own code.

Run from the service's folder with the service's environment: `python bench/fill_outbox.py N`.
Each enquiry is accepted as the form would accept it (one committed transaction each), but
without a captcha: solving 5,000 proofs of work would take far longer than delivering them.
Prints one JSON line: {"queued": N, "seconds": ...}.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.getcwd())

from service import create_app  # noqa: E402
from service.intake import accept  # noqa: E402


def main(count: int) -> None:
    """Queue `count` enquiries and report how long it took."""
    app = create_app()
    started = time.perf_counter()
    with app.app_context():
        for number in range(count):
            accept.accept(
                {
                    "name": "Jane Citizen",
                    "email": "jane.citizen@example.com",
                    "phone": "+61412345678",
                    "message": f"My lower back has been sore since Tuesday. (backlog {number})",
                    "page_url": "https://www.clinic.example/contact-us",
                },
                None,
            )
    print(json.dumps({"queued": count, "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main(int(sys.argv[1]))

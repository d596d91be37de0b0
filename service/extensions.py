"""Extensions, created unbound here and bound to the app in create_app."""

from flask_mail import Mail

from .limits import limiter
from .store import Store

mail = Mail()
store = Store()
__all__ = ["limiter", "mail", "store"]

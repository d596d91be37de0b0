"""Extensions, created unbound here and bound to the app in create_app."""

from flask_mail import Mail
from flask_wtf.csrf import CSRFProtect

from .store import Store

csrf = CSRFProtect()
mail = Mail()
store = Store()

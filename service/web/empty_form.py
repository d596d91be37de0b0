"""The empty form page, rendered once per process and filled in for each visitor."""

from __future__ import annotations

from flask import current_app, render_template
from markupsafe import escape

from ..intake.form import EnquiryForm
from .security import nonce_stand_in

# Stand-ins for the three things that differ between two empty forms: no output contains NUL.
TOKEN, NONCE, PAGE = "\x00token\x00", "\x00nonce\x00", "\x00page\x00"


class EmptyFormPage:
    """Every visitor's first view: the same page but for its token, nonce and page address.

    Rendering the template takes four times as long as filling in these three, and the form
    page is what every article on the clinic's site loads.
    """

    def __init__(self) -> None:
        self.rendered: str | None = None

    def render(self, token: str, nonce: str, page: str) -> str:
        """The empty form with this visitor's token, the response's nonce and the page."""
        rendered = self.rendered
        # A development server that reloads templates must show the edited one.
        if rendered is None or current_app.jinja_env.auto_reload:
            rendered = self.rendered = self._render_with_stand_ins()
        return rendered.replace(TOKEN, token).replace(NONCE, nonce).replace(PAGE, str(escape(page)))

    def _render_with_stand_ins(self) -> str:
        form = EnquiryForm(formdata=None, data={"page": PAGE})
        with nonce_stand_in(NONCE):
            return render_template("contact.html", form=form, token=TOKEN)

"""(b) The contact form most Flask tutorials ship: Flask-WTF with its session CSRF, Flask-Mail
sending the email inline, during the request, then a redirect.

Configured from the environment: SECRET_KEY, MAIL_SERVER, MAIL_PORT, MAIL_DEFAULT_SENDER,
CLINIC_INBOX.
"""

import os

from flask import Flask, flash, redirect, render_template, url_for
from flask_mail import Mail, Message
from flask_wtf import FlaskForm
from wtforms import EmailField, StringField, SubmitField, TelField, TextAreaField
from wtforms.validators import DataRequired, Email, Length

app = Flask(__name__)
app.config.update(
    SECRET_KEY=os.environ["SECRET_KEY"],
    MAIL_SERVER=os.environ["MAIL_SERVER"],
    MAIL_PORT=int(os.environ["MAIL_PORT"]),
    MAIL_DEFAULT_SENDER=os.environ["MAIL_DEFAULT_SENDER"],
)
mail = Mail(app)


class ContactForm(FlaskForm):
    """Name, email, phone and message, each required."""

    name = StringField("Name", validators=[DataRequired(), Length(max=100)])
    email = EmailField("Email", validators=[DataRequired(), Email()])
    phone = TelField("Phone number", validators=[DataRequired()])
    message = TextAreaField("Message", validators=[DataRequired(), Length(max=5000)])
    submit = SubmitField("Send message")


@app.route("/contact", methods=["GET", "POST"])
def contact():
    """Show the form; on a valid post, send the email now and redirect."""
    form = ContactForm()
    if form.validate_on_submit():
        msg = Message(
            subject=f"New enquiry from {form.name.data}",
            recipients=[os.environ["CLINIC_INBOX"]],
            reply_to=form.email.data,
            body=(
                f"Name: {form.name.data}\nEmail: {form.email.data}\n"
                f"Phone: {form.phone.data}\n\n{form.message.data}\n"
            ),
        )
        mail.send(msg)
        flash("Thank you for your message. We will be in touch soon.")
        return redirect(url_for("contact"))
    return render_template("contact.html", form=form)

"""Intake: what a submission meets before it is stored, and accepting it into the store."""

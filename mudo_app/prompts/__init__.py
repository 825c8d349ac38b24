"""Prompts for the 3D SAM teachers: simulated clicks on label masks (training, evaluation, active learning)."""

from mudo_app.prompts.clicks import first_click, next_click

__all__ = ["first_click", "next_click"]

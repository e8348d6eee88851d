"""Embedded, offline tasks shipped with abc_gym."""

"""Dialogs: shortcuts help, progress and bad-file reports, project settings and start page,
import options, label export."""

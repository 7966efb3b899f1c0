"""Evaluation: gIoU / cIoU / Dice / accuracy, answer parsing, reports and the ``evaluate`` command."""

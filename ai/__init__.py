"""What the AI analyzer (``ai_analyzer.py`` at the top) stands on: the confidence model with
its features, labels, calibration and training (``ai.ai_model``) and news sentiment scored by
the offline VADER lexicon (``ai.sentiment``)."""

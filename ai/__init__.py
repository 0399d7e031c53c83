"""What the AI analyzer (``ai_analyzer.py`` at the top) stands on: the confidence model with
its features, labels, calibration and training (``ai.ai_model``), news sentiment scored by
the offline VADER lexicon (``ai.sentiment``), and the analyzer's own parts: features and regime
at the last bar (``ai.live_features``), the scores (``ai.scoring``), the breakdown and
reasoning text (``ai.reasoning``), the external second opinion (``ai.second_opinion``) and the
choice of model file (``ai.model_choice``)."""

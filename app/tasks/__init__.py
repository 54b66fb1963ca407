"""Celery tasks, one module per feature, each named feature.verb_noun."""

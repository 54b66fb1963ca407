"""Process timers fired from Celery beat."""

import logging

from app.extensions import celery
from app.processes.timers import fire_due_timers

logger = logging.getLogger(__name__)


@celery.task(name="processes.fire_due_timers")
def fire_due_timers_task():
    """Fire every process timer whose due time has passed; returns how many fired."""
    count = fire_due_timers()
    if count:
        logger.info("Fired %s due process timers", count)
    return count

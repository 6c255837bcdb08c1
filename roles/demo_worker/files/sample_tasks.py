"""A sample Celery app for the flowerops demo and tests: one task that
succeeds, one that fails and one that sleeps."""

import time

from celery import Celery

app = Celery("sample_tasks")
app.config_from_object("sample_celeryconfig")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def fail(message: str = "sample failure") -> None:
    raise RuntimeError(message)


@app.task
def sleep(seconds: float = 5.0) -> float:
    time.sleep(seconds)
    return seconds

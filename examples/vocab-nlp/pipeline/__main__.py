"""`python -m pipeline`: what the service's endpoint answers for one request, printed."""

import pathlib

import otherpkg
import tinypkg

from pipeline import LANGUAGES, extract

models = sorted(p.name for p in pathlib.Path("/root/stanza_resources").iterdir())
print("models:", " ".join(models), "| deps:", tinypkg.VERSION, otherpkg.VERSION)
assert set(models) == set(LANGUAGES)
print("nl A1:", " ".join(extract("De kat zit op de mat en de hond slaapt", "nl", "A1")))

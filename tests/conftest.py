"""Settings every test shares.

Hypothesis' per-example deadline (200 ms) is a timing check, and this project keeps timing out of
unit tests: the first example of a test that calls the compiled kernel loads its cached machine
code (about 1 s), and a busy machine stretches any example. Speed is checked by `bench/`."""

from hypothesis import settings

settings.register_profile("sweetspot", deadline=None)
settings.load_profile("sweetspot")

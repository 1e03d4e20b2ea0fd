"""A package, so that scripts share modules (checkout_venv, fakerustc, processes,
cgroups) and the tests import them as `scripts.NAME`; a regular package, so no other
top-level `scripts` on the path can shadow it. Nothing here imports tests/."""

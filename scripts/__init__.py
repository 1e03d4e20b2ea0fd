"""A package only so that scripts can share scripts/checkout_venv.py (a regular
package, so no other top-level `scripts` on the path can shadow it)."""

"""mongosim: a MongoDB-wire-compatible replica-set simulator for tests (it is not MongoDB)."""
__version__ = "0.1.0"
MODELLED_VERSION = "7.0.0"

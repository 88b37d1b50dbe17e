"""The simulator's own suite: clusters on 127.10.0.0/16, the simulator or $MONGOD_BIN."""
from mongosim.pytest_plugin import *

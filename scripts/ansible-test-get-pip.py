"""Stand-in for ansible-test's pip bootstrap script.

ansible-test downloads get-pip.py from a host this network cannot reach. This does the same job with what
Python and PyPI already provide: ensurepip, then pip installs the requested pip/setuptools pins.
"""
import subprocess
import sys

# ensurepip in-process would set PIP_CONFIG_FILE=/dev/null for us too, hiding the machine's pip settings.
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", *args]))

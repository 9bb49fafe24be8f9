"""Stand-in for the get-pip.py bootstrap script that ansible-test downloads.

ansible-test bootstraps pip into each empty sanity/units virtual environment with a
get-pip.py fetched from ci-files.testing.ansible.com, which this project's build machines
cannot reach (only the package registries are). ansible-test documents the workaround:
save a bootstrap script at ~/.ansible/test/cache/get_pip_<version>.py. This one does the
same job with the standard library's ensurepip, then installs the exact packages
ansible-test asked for (pip==<version> and friends) from the package index.
"""

import subprocess
import sys


def main() -> None:
    args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args])


if __name__ == "__main__":
    main()

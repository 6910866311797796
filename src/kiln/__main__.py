"""``python -m kiln``: the ``kiln`` command, where the console script is not installed (for
example when kiln runs from a source checkout with ``PYTHONPATH=src``)."""

from kiln.cli.main import main

if __name__ == "__main__":
    main()

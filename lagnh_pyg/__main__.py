"""``python -m lagnh_pyg``: the ``lagnh`` command line."""

from lagnh_pyg.cli.main import main

if __name__ == "__main__":
    main()

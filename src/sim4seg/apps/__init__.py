"""Applications on top of the library: the ``sim4seg`` command line and the demo."""

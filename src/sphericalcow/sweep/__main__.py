"""``python -m sphericalcow.sweep ARGS``: the ``cow`` command line with the sweep commands registered, e.g.
``python -m sphericalcow.sweep sweep SPEC.toml`` (the same as ``cow sweep SPEC.toml``)."""

from __future__ import annotations


def _main() -> None:
    from ..cli import app, main
    from ..cli_sweep import register

    register(app)
    main()


if __name__ == "__main__":  # guarded: worker processes import this module as __mp_main__
    _main()

"""Fixtures of the serve tests: the tiny trained model behind a live server."""

from __future__ import annotations

import pytest

from helpers import trained_checkpoint
from serve_helpers import LiveServer


@pytest.fixture(scope="session")
def serve_ckpt(synth_m3ds, tmp_path_factory):
    return trained_checkpoint(synth_m3ds, tmp_path_factory.mktemp("ckpt") / "ckpt")


@pytest.fixture(scope="session")
def engine(serve_ckpt):
    from sim4seg.serve.engine import Engine, Limits

    return Engine.from_checkpoint(serve_ckpt, limits=Limits(max_pixels=1_000_000), max_new_tokens=24)


@pytest.fixture(scope="session")
def live(engine):
    """The full app (API + page), no token, a 2 MiB body limit."""
    from sim4seg.serve.app import create_app

    server = LiveServer(create_app(engine, max_body_bytes=2 * 2**20, queue=4))
    yield server
    server.stop()

"""Fixtures of the device conformance suite: `source_peer` and `target_peer` run a test once per registered peer
(test/contract/peers/*.py), each with its real server started in the test's own directory and stopped after it.

A peer whose device is not ported yet (PeerSpec.pending) runs as xfail with that reason, so its failures show up
without failing the suite, and a pass shows up as XPASS.
"""
import importlib
import pkgutil

import pytest

from contract import peers
from contract.peer import PEERS

for module in pkgutil.iter_modules(peers.__path__):
    importlib.import_module(f"{peers.__name__}.{module.name}")


def _params(kind):
    params = []
    for spec in PEERS:
        if getattr(spec, kind):
            reason = spec.pending()
            marks = [pytest.mark.xfail(reason=reason, strict=False)] if reason else []
            params.append(pytest.param(spec, id=spec.name, marks=marks))
    return params


def _running(spec, tmp_path, kind):
    """Start the peer, build its device (`kind`: 'source' or 'target'), close both afterwards."""
    with spec.factory(str(tmp_path / "peer")) as running:
        device = getattr(running, f"new_{kind}")()
        setattr(running, kind, device)
        try:
            yield running
        finally:
            device.close()


@pytest.fixture(params=_params("sources"))
def source_peer(request, tmp_path):
    """A running peer whose `source` is ready."""
    yield from _running(request.param, tmp_path, "source")


@pytest.fixture(params=_params("targets"))
def target_peer(request, tmp_path):
    """A running peer whose `target` is ready."""
    yield from _running(request.param, tmp_path, "target")

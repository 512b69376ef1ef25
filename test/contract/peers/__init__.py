"""One module per device for the conformance suite: each registers its peers with contract.conftest.peer."""

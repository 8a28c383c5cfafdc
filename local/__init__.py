"""Local stand-ins for AWS and PostHog: the embedded default and the tests.

Repository tooling, not part of the installed product (``pip install .`` ships only
``consumer``). Run from the repository root: ``python -m local demo|standin``.
"""

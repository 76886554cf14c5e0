"""The web dashboard: server-rendered page shells whose scripts read the public ``/api/v1``."""

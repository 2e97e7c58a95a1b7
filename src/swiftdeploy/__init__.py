"""swiftdeploy: policy-gated canary deployments on a single host."""

__version__ = "0.1.0"

"""Demo API deployed by swiftdeploy's examples, demo and end-to-end tests.

Kept import-light: `create_app` lives in demo_api.app (FastAPI), settings in demo_api.config.
"""

__version__ = "1.0.0"

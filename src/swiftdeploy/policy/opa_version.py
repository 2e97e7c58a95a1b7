"""The Open Policy Agent release swiftdeploy is tested with - the one place that pins it.

`make opa` installs exactly this version (the Makefile reads the OPA_VERSION line below), the generated compose
file's default `opa.image` is OPA_IMAGE, and a test checks that the Makefile, this default and the binary the tests
ran agree: what the tests ran is what users deploy. Stdlib only, no imports: the manifest model reads it.
"""

OPA_VERSION = "1.22.3"
OPA_IMAGE = f"openpolicyagent/opa:{OPA_VERSION}"

"""Demo API deployed by swiftdeploy's examples, demo and end-to-end tests."""

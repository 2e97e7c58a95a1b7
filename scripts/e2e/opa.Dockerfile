# OPA on the locally made Debian base (scripts/e2e_docker.sh), from the very binary the tests ran (`make opa`: the
# pinned version, CGO_ENABLED=0, so it needs nothing from the base). Tagged as the manifest's default opa.image
# (openpolicyagent/opa:<pin>) and shaped like the official image where the generated compose file relies on it:
# the binary is the entrypoint (compose passes `run --server ...` as the command) and it runs as a non-root user.
ARG BASE=swiftdeploy-base:bookworm
FROM ${BASE}
COPY opa /usr/local/bin/opa
USER 1000:1000
ENTRYPOINT ["/usr/local/bin/opa"]
CMD ["run"]

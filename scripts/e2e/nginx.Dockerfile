# nginx on the locally made Debian base (scripts/e2e_docker.sh): Debian's nginx-light is already in the base.
# Behaves like the official image where the generated files rely on it: logs go to the container's stdio, the
# configuration is /etc/nginx/nginx.conf (the generated file is mounted over it), SIGQUIT stops it gracefully.
ARG BASE=swiftdeploy-base:bookworm
FROM ${BASE}
# As in the official image: whatever nginx writes to its compiled-in log paths (before it has read nginx.conf, or
# under a configuration that does not set them) reaches `docker compose logs` instead of a read-only file.
RUN ln -sf /dev/stdout /var/log/nginx/access.log \
 && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 8080
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]

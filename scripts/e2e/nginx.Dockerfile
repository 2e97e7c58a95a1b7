# nginx on the locally made Debian base (scripts/e2e_docker.sh): Debian's nginx-light is already in the base.
# Behaves like the official image where the generated files rely on it: logs go to the container's stdio, the
# configuration is /etc/nginx/nginx.conf (the generated file is mounted over it), SIGQUIT stops it gracefully.
ARG BASE=swiftdeploy-base:bookworm
FROM ${BASE}
# nginx opens its compiled-in error log before it reads nginx.conf: point it at stderr so a non-root, read-only
# container starts without an "open() failed" alert.
RUN ln -sf /dev/stdout /var/log/nginx/access.log \
 && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 8080
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]

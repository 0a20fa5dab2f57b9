# syntax=docker/dockerfile:1
#
# Krill's container image, built with an engine:
#
#   docker build -t krill .        (or: podman build -t krill .)
#
# `make image` builds the same image without an engine or a registry
# (packaging/image, an OCI layout tarball); packaging/image/image_test.go
# checks that this file and that builder agree on user, environment, ports,
# volumes, labels, entrypoint and health check. Change both together.
# Running it: packaging/README.md.

ARG GO_VERSION=1.26

# Build stage: a static binary (no cgo: no libc, no loader), cross-compiled
# on the build machine's platform for the target's.
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS=linux
ARG TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -o /out/krill ./cmd/krill
# The volume directories, so that a fresh named volume starts out owned by
# the non-root user rather than by root.
RUN install -d -m 0750 /out/data /out/tls

# Runtime: distroless static has no shell and no package manager, only
# CA certificates, tzdata and /etc/passwd with "nonroot" as uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/krill /krill
COPY --from=build --chown=65532:65532 /out/data/ /var/lib/krill/
COPY --from=build --chown=65532:65532 /out/tls/ /etc/krill/tls/
LABEL org.opencontainers.image.title="krill" \
      org.opencontainers.image.description="Krill XMPP server, built for connection density" \
      org.opencontainers.image.source="https://github.com/krill-xmpp/krill" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532
WORKDIR /var/lib/krill
# Container defaults; any KRILL_* variable overrides the configuration
# (README.md, "Configuration"). The admin listener is not authenticated:
# publish 5280 only to the monitoring network.
ENV KRILL_C2S_LISTEN=0.0.0.0:5222 \
    KRILL_C2S_DIRECT_TLS_LISTEN=0.0.0.0:5223 \
    KRILL_S2S_LISTEN=0.0.0.0:5269 \
    KRILL_ADMIN_LISTEN=0.0.0.0:5280 \
    KRILL_DATA_DIR=/var/lib/krill \
    KRILL_LOG_FORMAT=json
# c2s STARTTLS, c2s direct TLS (XEP-0368), s2s (federation), admin (metrics, health).
EXPOSE 5222/tcp 5223/tcp 5269/tcp 5280/tcp
# The database (and the generated development certificate); the operator's
# certificate and key (KRILL_TLS_CERT, KRILL_TLS_KEY).
VOLUME ["/var/lib/krill", "/etc/krill/tls"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["/krill", "health"]
ENTRYPOINT ["/krill"]
CMD ["serve"]

# syntax=docker/dockerfile:1
# The tokenstore image for people with Docker / BuildKit:
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION=0.1.0 --build-arg COMMIT=$(git rev-parse HEAD) \
#     -t ghcr.io/tokenstore/tokenstore:0.1.0 .
#
# `make image` builds the same image without a daemon (hack/image, the one
# released); test/image holds this file to it: the go build command and its
# flags (the Makefile's LDFLAGS), user 65532, entrypoint, command and labels.

# The compiler runs on the build machine's platform and cross-compiles for
# the target one: no emulation, and the static binary needs none.
FROM --platform=$BUILDPLATFORM golang:1.26.8-bookworm AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
ARG COMMIT=unknown
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static, no dev mode (no -tags dev: the demo identity provider stays out),
# reproducible: -trimpath, no VCS stamping (the commit comes from COMMIT).
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH GOFLAGS= \
    go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/tokenstore ./cmd/tokenstore

# distroless static: CA certificates, /etc/passwd with nonroot (65532), no
# shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="tokenstore" \
      org.opencontainers.image.description="Keeps OAuth2 / OpenID Connect refresh tokens encrypted and hands out fresh access tokens" \
      org.opencontainers.image.source="https://github.com/tokenstore/tokenstore" \
      org.opencontainers.image.url="https://github.com/tokenstore/tokenstore" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/tokenstore /tokenstore
USER 65532:65532
ENTRYPOINT ["/tokenstore"]
CMD ["serve"]

# syntax=docker/dockerfile:1
# canarygate: a static binary on distroless, non-root. Build with `make docker-build IMG=...`.
# Every package that cmd/canarygate imports is copied below; manifests_test.go checks the list.

FROM golang:1.26 AS builder
ARG TARGETOS=linux
ARG TARGETARCH
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY api/ api/
COPY certs/ certs/
COPY cmd/ cmd/
COPY controller/ controller/
COPY policy/ policy/
COPY revision/ revision/
COPY webhook/ webhook/
# Static (no cgo), reproducible paths, no symbol table.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags="-s -w" -o /out/canarygate ./cmd/canarygate

FROM gcr.io/distroless/static:nonroot
COPY --from=builder /out/canarygate /canarygate
# distroless' nonroot user; the Deployment runs it with a read-only root filesystem.
USER 65532:65532
ENTRYPOINT ["/canarygate"]

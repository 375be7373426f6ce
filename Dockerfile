# syntax=docker/dockerfile:1
# One image with the three service binaries (and the agent simulator), each at
# /NAME; Kubernetes picks one per Deployment with `command` (see deploy/).
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) \
#     --build-arg COMMIT=$(git rev-parse HEAD) --build-arg DATE=$(git log -1 --format=%cI) \
#     -t ghcr.io/viworks/backend-agent:1.2.3 .
#   docker run --rm IMAGE /scheduler migrate
# The build uses a workspace of just pkg and the four binaries' modules (made
# here with `go work init`), so the image needs none of the repository's other
# modules (tests, benchmarks, tools) and builds even while a binary's go.sum
# lags behind pkg's requirements.

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS
ARG TARGETARCH
# The stamp --version prints, as `make release` sets it (the build context has
# no .git): the same flags give the same binaries as the release archives.
ARG VERSION=dev
ARG COMMIT=unknown
ARG DATE=unknown
# The same fixed Go as the Makefile (fetched from the module proxy).
ENV CGO_ENABLED=0 GOTOOLCHAIN=go1.27.3
WORKDIR /src

# Dependencies first, so that source edits do not download them again.
COPY pkg/go.mod pkg/go.sum ./pkg/
COPY api-server/go.mod api-server/go.sum ./api-server/
COPY agent-gateway/go.mod agent-gateway/go.sum ./agent-gateway/
COPY scheduler/go.mod scheduler/go.sum ./scheduler/
COPY agentsim/go.mod agentsim/go.sum ./agentsim/
RUN go work init ./pkg ./api-server ./agent-gateway ./scheduler ./agentsim && \
    go mod download

COPY pkg/ ./pkg/
COPY api-server/ ./api-server/
COPY agent-gateway/ ./agent-gateway/
COPY scheduler/ ./scheduler/
COPY agentsim/ ./agentsim/
RUN --mount=type=cache,target=/root/.cache/go-build \
    export GOOS=$TARGETOS GOARCH=$TARGETARCH && \
    bi=github.com/viworks/backend-agent/pkg/buildinfo && \
    ldflags="-s -w -buildid= -X $bi.Version=$VERSION -X $bi.Commit=$COMMIT -X $bi.Date=$DATE" && \
    cd /src/api-server && go build -trimpath -ldflags="$ldflags" -o /out/api-server . && \
    cd /src/agent-gateway && go build -trimpath -ldflags="$ldflags" -o /out/agent-gateway . && \
    cd /src/scheduler && go build -trimpath -ldflags="$ldflags" -o /out/scheduler . && \
    cd /src/agentsim && go build -trimpath -ldflags="$ldflags" -o /out/agentsim .

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="viworks-backend-agent" \
      org.opencontainers.image.description="ViWorkS control plane: api-server, agent-gateway, scheduler (and agentsim)" \
      org.opencontainers.image.source="https://github.com/viworks/backend-agent" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/ /
USER 65532:65532
# api-server 8080, agent-gateway 8081, scheduler 8082
EXPOSE 8080 8081 8082
# No ENTRYPOINT: run any binary, e.g. `docker run IMAGE /scheduler migrate`.
CMD ["/api-server"]

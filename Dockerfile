# WinDI Chat server image: `docker build -t windi .` (docker-compose.yml
# builds it for every replica). The binary is pure Go (CGO_ENABLED=0); the
# final stage is Alpine so that health checks have wget and a shell.

FROM golang:1.26 AS build
WORKDIR /src
# Modules first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /windi ./cmd/windi

FROM alpine:3.22
RUN apk add --no-cache ca-certificates \
    && addgroup -S -g 10001 windi \
    && adduser -S -D -H -u 10001 -G windi -h /data windi \
    && mkdir -p /data && chown windi:windi /data
COPY --from=build /windi /usr/local/bin/windi
USER windi:windi
# Embedded mode keeps its SQLite file and JWT secret in /data; scaled mode
# (DATABASE_URL and REDIS_URL set) keeps nothing there.
ENV WINDI_ADDR=:8000 WINDI_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD wget -q -O /dev/null http://127.0.0.1:8000/readyz || exit 1
# SIGTERM closes WebSockets with 1001 and drains (SPEC §4).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/windi"]
CMD ["serve"]

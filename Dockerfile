# One image for all eight services (ingest-api, downloader, transcoder-720, transcoder-360, packager,
# thumbnailer, uploader, notifier). Pick the service with the command, e.g.
#   docker run video-mesh:latest node services/packager/src/main.ts
# docker-compose.yml sets the command per service. Node 24 runs the TypeScript sources directly
# (type stripping); there is no build step.
FROM node:24-slim

# ffmpeg + ffprobe for the downloader, transcoders and thumbnailer.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Manifests first, so the npm layer is rebuilt only when dependencies change. Docker's COPY flattens
# globs, so each workspace's package.json is copied to its own directory.
COPY package.json package-lock.json ./
COPY libs/bus/package.json libs/bus/
COPY libs/common/package.json libs/common/
COPY libs/jobs/package.json libs/jobs/
COPY libs/media/package.json libs/media/
COPY libs/storage/package.json libs/storage/
COPY libs/telemetry/package.json libs/telemetry/
COPY libs/testkit/package.json libs/testkit/
COPY libs/transcoder/package.json libs/transcoder/
COPY services/downloader/package.json services/downloader/
COPY services/ingest-api/package.json services/ingest-api/
COPY services/notifier/package.json services/notifier/
COPY services/packager/package.json services/packager/
COPY services/thumbnailer/package.json services/thumbnailer/
COPY services/transcoder-360/package.json services/transcoder-360/
COPY services/transcoder/package.json services/transcoder/
COPY services/transcoder-720/package.json services/transcoder-720/
COPY services/uploader/package.json services/uploader/

# Production dependencies only: no test servers, browsers, compilers or the npm Node runtime in the image.
# Shaka Packager (node_modules/shaka-packager/bin/packager-linux-x64) is a regular dependency for this.
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error \
 && npm cache clean --force

COPY tsconfig*.json ./
COPY ladders/ ladders/
COPY libs/ libs/
COPY services/ services/

# Unprivileged user of the node image; the services write only to the temp directory.
USER node

EXPOSE 8000
CMD ["node", "services/ingest-api/src/main.ts"]

# An upgrade image: a node image of the new major with an older major's server beside it, for
# pg_upgrade, which runs both. pgharness.upgrade builds it from two node images (OLD_IMAGE, NEW_IMAGE):
# the old one's server folders and the shared libraries they load are collected in its own image,
# and kept in this one only where this one lacks them (docker/pgharness.sh, old-binaries).
ARG OLD_IMAGE
ARG NEW_IMAGE
FROM ${OLD_IMAGE} AS old
USER root
COPY pgharness.sh /tmp/pgharness.sh
RUN sh /tmp/pgharness.sh old-binaries collect /tmp/old

FROM ${NEW_IMAGE}
USER root
COPY --from=old /tmp/old /opt/pgharness/old
RUN pgharness old-binaries adopt /opt/pgharness/old
USER postgres

/* fm_artifact.h: where a registered model's files are, as a local
 * directory the loader can read: a local path (a shared volume) is used in
 * place; an MLflow artifact (mlflow-artifacts:/..., models:/NAME/VERSION,
 * models:/NAME@ALIAS) is downloaded through the tracking server into a
 * local cache, one directory per weights SHA-256, and verified. */
#ifndef FM_ARTIFACT_H
#define FM_ARTIFACT_H

#include <stddef.h>

/* Largest files accepted from a download (the model format's own limit). */
#define FM_ARTIFACT_MAX_WEIGHTS_BYTES ((long long)100 << 20)
#define FM_ARTIFACT_MAX_SIDECAR_BYTES ((long long)1 << 20)

/* 1 for a local path or file: URI (its directory goes into `dir`), else 0. */
int fm_artifact_local_dir(const char *uri, char *dir, size_t cap);

/* A local directory holding the model at `uri` whose weights have SHA-256
 * `expected_sha256` (NULL: whatever was downloaded, checked against its own
 * sidecar). Remote artifacts are fetched into <cache_dir>/<sha256>/ (reused
 * when already there and intact) through the MLflow tracking server
 * `tracking_uri`, written under a temporary name and renamed when complete.
 * FM_ECHECKSUM when the files differ from what was expected. */
int fm_artifact_fetch(const char *uri, const char *expected_sha256, const char *cache_dir, const char *tracking_uri,
                      int timeout_ms, char *dir, size_t cap);

/* Resolves models:/NAME/VERSION and models:/NAME@ALIAS to the version's
 * source URI through the MLflow registry; other URIs are copied as given. */
int fm_artifact_resolve_mlflow(const char *uri, const char *tracking_uri, int timeout_ms, char *source, size_t cap);

#endif /* FM_ARTIFACT_H */

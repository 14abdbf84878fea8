/* regtest.h: what the lifecycle tests share: model directories with
 * metrics and MLflow fields, corrupting one, running fmctl, a real MLflow
 * tracking server (`mlflow server` from the test venv) on loopback with a
 * SQLite store and a temporary artifact folder, and JSON over HTTP for
 * checking what it holds through its REST API. */
#ifndef FM_REGTEST_H
#define FM_REGTEST_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

/* A random model (mlp or cnn) with identity `version`, the given test
 * accuracy in its metrics and, when run_id is not NULL, an "mlflow" section. */
int regtest_write_model(const char *dir, int cnn, uint64_t seed, const char *version, double test_accuracy,
                        const char *run_id);
/* Flips one byte in the middle of dir/model.safetensors. */
int regtest_corrupt(const char *dir);
/* SHA-256 of dir/model.safetensors as the sidecar records it. */
int regtest_model_sha(const char *dir, char sha[65]);

/* Runs `fmctl ARGS` (a shell fragment) with FM_DATABASE_URL=url when url is
 * not NULL; returns the exit code and stdout+stderr in *out (malloc'd). */
int regtest_fmctl(const char *url, const char *args, char **out);
const char *regtest_fmctl_path(void);

/* ---- MLflow ---- */

/* Starts `mlflow server` from the venv of $FM_TEST_PYTHON on a free
 * 127.0.0.1 port with a SQLite backend and an artifact folder under the
 * test's temporary directory, and waits (up to 120 s) for /health. Returns
 * 0 with the base URL in `url`; FM_EUNSUPPORTED (skip, reason in
 * fm_last_error()) when mlflow 2.x is not installed there. The server (its
 * whole process group) is stopped at exit, and by a watchdog if the test
 * dies. */
int regtest_mlflow_start(char *url, size_t cap);
/* Stops it now (a later regtest_mlflow_start starts it again). */
void regtest_mlflow_stop(void);
/* GET url, parsed (NULL on a transport error or non-JSON; *http gets the status). */
cJSON *regtest_get_json(const char *url, long *http);
/* GET url's raw bytes (malloc'd; NULL on failure). */
char *regtest_get_bytes(const char *url, size_t *len, long *http);
/* A free TCP port on 127.0.0.1 (nothing listens there after the call). */
int regtest_free_port(void);

#endif /* FM_REGTEST_H */
